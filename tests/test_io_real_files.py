"""Every real file in shared/data reads with the right count and fields (checked against Open3D)."""

import numpy as np
import pytest

from ad3d.errors import ScanFormatError
from ad3d.io import read_rgbd, read_scan

# point counts after NaN removal, as Open3D's reader gives them; fields we must keep
PCD_FILES = {
    "bun0.pcd": (397, {"normals"}, {"curvature"}),
    "capture0001.pcd": (249647, set(), set()),
    "car6.pcd": (10031, set(), set()),
    "cloud_bin_0.pcd": (3903, {"normals", "colors"}, set()),
    "colored_cloud.pcd": (1000, {"normals", "colors"}, {"curvature"}),
    "fragment.pcd": (113662, {"normals", "colors"}, {"curvature"}),
    "milk.pcd": (13704, set(), set()),
    "milk_color.pcd": (13704, {"colors"}, set()),
    "object_template_0.pcd": (1397, set(), set()),
    "sac_plane_test.pcd": (3283, {"normals"}, {"curvature"}),
    "test0.pcd": (189198, {"colors"}, {"label"}),
}


@pytest.mark.parametrize("name", sorted(PCD_FILES))
def test_real_pcd_reads_with_count_and_fields(shared_data, name):
    count, attrs, fields = PCD_FILES[name]
    scan = read_scan(shared_data / "pcd" / name)
    assert len(scan) == count
    for attr in ("normals", "colors"):
        assert (getattr(scan, attr) is not None) == (attr in attrs), attr
    assert set(scan.fields) == fields
    assert np.isfinite(scan.points).all()


@pytest.mark.parametrize("name", sorted(PCD_FILES))
def test_real_pcd_matches_open3d_points_and_colours(shared_data, name):
    o3d = pytest.importorskip("open3d")
    path = str(shared_data / "pcd" / name)
    ref = o3d.io.read_point_cloud(path, remove_nan_points=True, remove_infinite_points=True)
    scan = read_scan(path)
    np.testing.assert_allclose(scan.points, np.asarray(ref.points), atol=1e-6)
    if ref.has_colors():
        np.testing.assert_allclose(scan.colors / 255.0, np.asarray(ref.colors), atol=0.5 / 255)


def test_pcd_without_xyz_is_rejected_by_name(shared_data):
    path = shared_data / "pcd" / "stereo_left.pcd"
    with pytest.raises(ScanFormatError, match=r"stereo_left\.pcd.*no x y z fields.*rgba"):
        read_scan(path)


def test_organised_capture_keeps_grid_and_drops_nans(shared_data):
    scan = read_scan(shared_data / "pcd" / "capture0001.pcd")
    assert scan.grid_shape == (480, 640)
    assert scan.meta["invalid_points"] + len(scan) == 480 * 640
    assert scan.meta["invalid_points"] > 0
    assert not (scan.points == 0).all(axis=1).any()  # NaNs were dropped, not turned into zeros
    assert np.all(np.diff(scan.grid_index) > 0) and scan.grid_index.max() < 480 * 640
    img = scan.to_image(scan.points[:, 2], fill=np.nan)
    assert np.isnan(img).sum() == scan.meta["invalid_points"]


def test_organised_capture_refuses_nans_when_asked_to_keep_them(shared_data):
    with pytest.raises(ScanFormatError, match=r"capture0001\.pcd.*57553 points hold NaN"):
        read_scan(shared_data / "pcd" / "capture0001.pcd", remove_invalid=False)


def test_segmentation_label_field_stays_a_field_not_ground_truth(shared_data):
    scan = read_scan(shared_data / "pcd" / "test0.pcd")
    assert scan.labels is None
    assert scan.fields["label"].dtype == np.uint32 and scan.fields["label"].max() > 0


MESHES = [
    "cad/1002_tray_bottom.STL",
    "cad/ADIS16480.STL",
    "cad/angle_block.STL",
    "cad/box.STL",
    "cad/cycloidal.ply",
    "cad/featuretype.STL",
    "cad/fixed_top.ply",
    "cad/idler_riser.STL",
    "cad/octagonal_pocket.stl",
    "cad/plate_holes.STL",
    "cad/round.stl",
    "cad/torus.STL",
    "ycb/banana.obj",
    "ycb/cracker_box.obj",
    "ycb/foam_brick.obj",
    "ycb/gelatin_box.obj",
    "ycb/master_chef_can.obj",
    "ycb/mustard_bottle.obj",
    "ycb/potted_meat_can.obj",
    "ycb/power_drill.obj",
    "ycb/scissors.obj",
    "ycb/tomato_soup_can.obj",
]


@pytest.mark.parametrize("name", MESHES)
def test_every_shared_mesh_reads_and_samples(shared_data, name):
    path = shared_data / "meshes" / name
    verts = read_scan(path)
    assert len(verts) > 100
    sampled = read_scan(path, sample=2000, seed=3)
    assert len(sampled) == 2000
    np.testing.assert_allclose(np.linalg.norm(sampled.normals, axis=1), 1.0, atol=1e-4)
    lo, hi = verts.points.min(0), verts.points.max(0)  # samples lie on the surface, inside the box
    assert (sampled.points >= lo - 1e-5).all() and (sampled.points <= hi + 1e-5).all()
    again = read_scan(path, sample=2000, seed=3)
    assert np.array_equal(again.points, sampled.points)


def test_stl_vertices_are_merged(shared_data):
    import trimesh

    raw = trimesh.load(str(shared_data / "meshes" / "cad" / "box.STL"), process=False)
    assert len(read_scan(shared_data / "meshes" / "cad" / "box.STL")) < len(raw.vertices)


def test_rgbd_frame_back_projects_through_intrinsics(shared_data):
    from PIL import Image

    rd = shared_data / "rgbd" / "redwood"
    scan = read_rgbd(rd / "depth" / "00000.png", rd / "camera_primesense.json", rd / "color" / "00000.jpg")
    depth = np.asarray(Image.open(rd / "depth" / "00000.png"))
    assert scan.grid_shape == (480, 640) and scan.image.shape == (480, 640, 3)
    assert len(scan) == int((depth > 0).sum())
    i = len(scan) // 2
    v, u = divmod(int(scan.grid_index[i]), 640)
    z = depth[v, u] / 1000.0
    np.testing.assert_allclose(scan.points[i], [(u - 319.5) * z / 525.0, (v - 239.5) * z / 525.0, z], rtol=1e-5)
    assert np.array_equal(scan.colors[i], scan.image[v, u])
    via_read_scan = read_scan(rd / "depth" / "00000.png", intrinsics=rd / "camera_primesense.json")
    assert np.array_equal(via_read_scan.points, scan.points)
