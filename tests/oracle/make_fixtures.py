"""Write the oracle fixtures: seeded inputs, run through the official releases' own functions, saved with
their outputs as .npz files beside this script. ad3d's tests must reproduce the outputs (README.md here).

    python tests/oracle/make_fixtures.py --musc PATH/MuSc-V2 --mc4ad PATH/code --r3dad PATH/r3d-ad --lsfa PATH/LSFA \
        --m3dm PATH/M3DM [--only NAME ...]

PATH/MuSc-V2 is a checkout of HUST-SLOW/MuSc-V2 at b5e911d, PATH/code the unzipped code.zip of
hzzzzzhappy/MC4AD at 27cf768, PATH/r3d-ad a checkout of alibalapour/r3d-ad at 7b1d989 (the authors'
release commit), PATH/LSFA a checkout of yuanpengtu/LSFA at a8dd6d7, PATH/M3DM one of nomewang/M3DM at
62b7f46. Their modules are imported from
there; nothing of them is copied. Needs torch, scikit-learn, Pillow, torchvision's transforms, open3d and
faiss-cpu.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent / "fixtures"
MAKERS = {}


def maker(name):
    def register(fn):
        MAKERS[name] = fn
        return fn

    return register


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def surface(rng: np.random.Generator, n: int) -> np.ndarray:
    """A gently waving sheet, a ridge across part of it, and a second sheet close above one end: flat and
    curved groups, and neighbourhoods that could bridge two surfaces."""
    uv = rng.uniform(-1, 1, (n, 2))
    z = 0.01 * np.sin(2 * uv[:, 0]) + 0.4 * np.maximum(0, 0.15 - np.abs(uv[:, 1])) * (uv[:, 0] < -0.4)
    sheet = np.c_[uv, z]
    upper = (uv[:, 0] > 0.5) & (rng.random(n) < 0.5)
    sheet[upper, 2] += 0.06
    return sheet.astype(np.float32)


@maker("musc_msm")
def musc_msm(release: dict) -> dict:
    """MSM per layer (`_MSM.py:MSM_single`) on 3 layers of 9 scans x 40 rows, then the mean over layers
    (`muscv2.py:make_category_data`)."""
    from models.modules._MSM import MSM_single

    rng = np.random.default_rng(0)
    layers = [unit(rng.normal(size=(9, 40, 16)) + rng.normal(size=(1, 40, 16)) * 2) for _ in range(3)]
    per_layer = [MSM_single(torch.from_numpy(z), device="cpu").numpy() for z in layers]
    return {"layers": np.stack(layers), "per_layer": np.stack(per_layer), "mean": np.mean(per_layer, 0)}


@maker("musc_snamd_3d")
def musc_snamd_3d(release: dict) -> dict:
    """SNAMD on groups (`_SNAMD.py:SNAMD._embed_3d`, r_list [1, 3, 5]) for 3 layers of 200 groups."""
    from models.modules._SNAMD import SNAMD

    rng = np.random.default_rng(1)
    centres = rng.uniform(-1, 1, (200, 3)).astype(np.float32)
    layers = [unit(rng.normal(size=(200, 24)) + centres[:, :1] * 3) for _ in range(3)]
    curvatures = rng.uniform(0, 0.02, 200).astype(np.float32)
    out = SNAMD(device="cpu", r_list=[1, 3, 5])._embed_3d(
        [torch.from_numpy(f)[None] for f in layers], torch.from_numpy(centres).T[None], torch.from_numpy(curvatures)
    )
    return {"layers": np.stack(layers), "centres": centres, "curvatures": curvatures, "out": out[0].float().numpy()}


@maker("musc_snamd_2d")
def musc_snamd_2d(release: dict) -> dict:
    """SNAMD on patches (`_SNAMD.py:SNAMD._embed_2d`, r_list [1, 3, 5]) for 2 layers of 12 x 12 patch tokens
    (a class token first, as the ViT gives them), then the L2 normalisation `muscv2.py` applies."""
    from models.modules._SNAMD import SNAMD

    rng = np.random.default_rng(2)
    tokens = [rng.normal(size=(1, 1 + 144, 20)).astype(np.float32) for _ in range(2)]
    out = SNAMD(device="cpu", r_list=[1, 3, 5])._embed_2d([torch.from_numpy(t) for t in tokens])
    out = out / out.norm(dim=-1, keepdim=True)
    return {"tokens": np.stack(tokens)[:, 0], "out": out[0].float().numpy()}


@maker("musc_cae")
def musc_cae(release: dict) -> dict:
    """CAE (`_MSM.py:compute_scores_multiple` with `patch2point` / `point2patch`) for 8 scans: 28 x 28 patches
    and 96 groups whose centres lie in the middle of a 224 x 224 image (so most patches hold none)."""
    from models.modules._MSM import compute_scores_multiple, patch2point, point2patch

    rng = np.random.default_rng(3)
    z2 = unit(rng.normal(size=(8, 784, 12)) + rng.normal(size=(1, 784, 12)) * 2)
    z3 = unit(rng.normal(size=(8, 96, 10)) + rng.normal(size=(1, 96, 10)) * 2)
    rows, cols = rng.integers(60, 170, (8, 96)), rng.integers(40, 190, (8, 96))
    pixels = torch.from_numpy(rows * 224 + cols)
    p2p, pt2p = patch2point(784, pixels, 224), point2patch(784, pixels, 224)
    out2, out3 = [], []
    for i in range(8):
        s2, s3 = compute_scores_multiple(
            torch.from_numpy(z2), torch.from_numpy(z3), i, patch2point_list=p2p, point2patch_list=pt2p
        )
        out2.append(s2.numpy())
        out3.append(s3.numpy())
    return {"z2": z2, "z3": z3, "pixels": pixels.numpy(), "out2": np.stack(out2), "out3": np.stack(out3)}


@maker("musc_rscon")
def musc_rscon(release: dict) -> dict:
    """RsCon (`_RsCon.py:RsCon`, k_list [1, 7]) over 12 scans' object scores and anomaly-salient features."""
    from models.modules._RsCon import RsCon

    rng = np.random.default_rng(4)
    scores = rng.uniform(0.2, 1.5, 12)
    salient = (rng.normal(size=(12, 30)) * rng.uniform(0.5, 1.5, (12, 1))).astype(np.float32)
    return {"scores": scores, "salient": salient, "out": RsCon(scores, torch.from_numpy(salient), k_list=[1, 7])}


@maker("musc_ipg")
def musc_ipg(release: dict) -> dict:
    """IPG (`_IPG.py:iter_group`, 128 points, steps of 80) on 96 centres of a 4000-point cloud, with the 256
    nearest points of every point from the release's `KNN_cpu` (`utils/pointnet2_utils.py`)."""
    from models.modules._IPG import iter_group
    from utils.pointnet2_utils import KNN_cpu

    rng = np.random.default_rng(5)
    xyz = surface(rng, 4000)
    centres = rng.choice(4000, 96, replace=False)
    _, idx_all = KNN_cpu(k=256, transpose_mode=True)(torch.from_numpy(xyz)[None], torch.from_numpy(xyz)[None])
    groups, curvatures, _ = iter_group(torch.from_numpy(xyz)[None], torch.from_numpy(centres)[None], idx_all, 128)
    return {"xyz": xyz, "centres": centres, "groups": groups[0].numpy(), "curvatures": np.asarray(curvatures)}


@maker("musc_maps")
def musc_maps(release: dict) -> dict:
    """The maps (`muscv2.py:make_category_data`): 3D group scores to points (`utils/pointnet2_utils.py:
    interpolating_points`), scattered on the 224 x 224 grid, blurred (`utils/tools.py:KNNGaussianBlur(4)`);
    the 28 x 28 2D map bilinear (corners aligned) to 224; their sum and its max, the object score."""
    import torch.nn.functional as F
    from utils.pointnet2_utils import interpolating_points
    from utils.tools import KNNGaussianBlur

    rng = np.random.default_rng(6)
    region = (np.arange(40, 180)[:, None] * 224 + np.arange(30, 200)[None]).ravel()
    pixels = np.sort(rng.choice(region, 3000, replace=False))
    rows, cols = np.divmod(pixels, 224)
    xyz = np.c_[cols / 224.0, rows / 224.0, 0.05 * np.sin(cols / 20.0)] + rng.normal(0, 1e-3, (3000, 3))
    xyz = xyz.astype(np.float32)
    centre_idx = rng.choice(3000, 128, replace=False)
    s3 = rng.uniform(0.1, 0.5, 128).astype(np.float32)
    s3[5] = 1.2  # one group stands out
    s2 = rng.uniform(0.0, 0.3, 784).astype(np.float32)
    at_points = interpolating_points(
        torch.from_numpy(xyz)[None], torch.from_numpy(xyz[centre_idx])[None], torch.from_numpy(s3)[None, :, None]
    )[0, 0]
    flat = torch.zeros(224 * 224)
    flat[torch.from_numpy(pixels)] = at_points
    map3 = torch.tensor(KNNGaussianBlur(4)(flat.reshape(1, 1, 224, 224))).reshape(224, 224)
    map2 = F.interpolate(torch.from_numpy(s2).view(1, 1, 28, 28), size=224, mode="bilinear", align_corners=True)[0, 0]
    fused = map2 + map3
    return {
        "xyz": xyz,
        "pixels": pixels,
        "centre_idx": centre_idx,
        "s3": s3,
        "s2": s2,
        "at_points": at_points.numpy(),
        "map3": map3.numpy(),
        "fused": fused.numpy(),
        "object": np.float32(fused.max()),
    }


def mc4ad_importable(release: dict) -> None:
    """MC4AD's network module imports MinkowskiEngine (not installable here) and its truncated Mink.py: stand
    in empty modules for both, so that its plain torch functions load."""
    sys.modules.setdefault("MinkowskiEngine", types.ModuleType("MinkowskiEngine"))
    mink = types.ModuleType("network.Mink")
    mink.Mink_unet = None
    sys.modules.setdefault("network.Mink", mink)
    sys.path.insert(0, str(release["mc4ad"].resolve()))


@maker("mc4ad_object_score")
def mc4ad_object_score(release: dict) -> dict:
    """MC4AD's scores (`code/network/MC4AD.py:eval_fn`, from the release's code.zip) of 500 points' predicted
    forces (6 numbers each: internal then external), the network stood in for by one that returns them."""
    mc4ad_importable(release)
    from network.MC4AD import eval_fn

    rng = np.random.default_rng(7)
    forces = (rng.normal(size=(500, 6)) * rng.uniform(0.01, 0.2, (500, 1))).astype(np.float32)

    class StandIn:
        def test_inference(self, feat_voxel, xyz_voxel, v2p_index):
            return torch.from_numpy(forces)

    batch = {"xyz_voxel": None, "feat_voxel": None, "v2p_index": None}
    score, joint = eval_fn(batch, StandIn())
    return {"forces": forces, "joint": joint.numpy(), "object": np.float32(score)}


@maker("mc4ad_loss")
def mc4ad_loss(release: dict) -> dict:
    """MC4AD's training loss (`code/network/MC4AD.py: model_fn`, symmetric weight 0.1) on 400 points' predicted
    forces and target offsets (a quarter of them zero, as outside a pseudo-defect), the network stood in for
    by one that returns the forces; Tensor.cuda() is the identity here."""
    mc4ad_importable(release)
    from network.MC4AD import model_fn

    rng = np.random.default_rng(11)
    forces = (rng.normal(size=(400, 6)) * 0.05).astype(np.float32)
    target = (rng.normal(size=(400, 3)) * 0.05 * (rng.random((400, 1)) > 0.25)).astype(np.float32)

    class StandIn:
        def __call__(self, feat_voxel, xyz_voxel, v2p_index):
            return torch.from_numpy(forces)

    batch = {"xyz_voxel": None, "feat_voxel": None, "v2p_index": None, "batch_count": None}
    batch["batch_offset"] = torch.from_numpy(target)
    cuda, torch.Tensor.cuda = torch.Tensor.cuda, lambda self, *a, **kw: self
    try:
        loss = model_fn(batch, StandIn(), types.SimpleNamespace(batch_size=1))[0]
    finally:
        torch.Tensor.cuda = cuda
    return {"forces": forces, "target": target, "loss": np.float32(loss)}


def cuda_stand_ins() -> None:
    """Exact CPU stand-ins for the releases' CUDA ops, installed as the modules they import: `knn_cuda.KNN`
    (k nearest reference points of each query, nearest first), `pointnet2_ops.pointnet2_utils`
    (`furthest_point_sample` from index 0, `gather_operation`), and `timm.models.layers` (DropPath is the
    identity at inference; trunc_normal_ only initialises weights that are then loaded)."""

    class KNN:
        def __init__(self, k, transpose_mode=True):
            self.k = k

        def __call__(self, ref, query):
            dist, idx = torch.cdist(query, ref).topk(self.k, dim=-1, largest=False)
            return dist, idx

    def furthest_point_sample(points, number):
        out = torch.zeros(points.shape[0], number, dtype=torch.int32)
        for b, cloud in enumerate(points):
            nearest = torch.full((len(cloud),), float("inf"))
            last = 0
            for i in range(1, number):
                nearest = torch.minimum(nearest, ((cloud - cloud[last]) ** 2).sum(1))
                last = int(torch.argmax(nearest))
                out[b, i] = last
        return out

    def gather_operation(features, idx):
        return torch.stack([f[:, i.long()] for f, i in zip(features, idx)])

    modules = {name: types.ModuleType(name) for name in ("knn_cuda", "pointnet2_ops", "timm", "timm.models")}
    modules["knn_cuda"].KNN = KNN
    utils = types.SimpleNamespace(furthest_point_sample=furthest_point_sample, gather_operation=gather_operation)
    modules["pointnet2_ops"].pointnet2_utils = utils
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = lambda p=0.0: torch.nn.Identity()
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    modules["timm.models.layers"], modules["timm"].models, modules["timm.models"].layers = (
        layers,
        modules["timm.models"],
        layers,
    )
    for name, module in modules.items():
        sys.modules[name] = module


@maker("r3dad_scores")
def r3dad_scores(release: dict) -> dict:
    """R3D-AD's scores (`evaluation/evaluation_metrics.py:ROC_AP` of alibalapour/r3d-ad at the authors' commit
    7b1d989) for 6 clouds of 600 points and their reconstructions: the per-point distances and the
    reweighted object scores it hands to roc_auc_score (caught there), min-max normalised over the set.
    Its `knn_cuda.KNN` (a CUDA op, used only by the `_nn` variant) is stood in for (`cuda_stand_ins`)."""

    cuda_stand_ins()
    sys.path.insert(0, str(release["r3dad"].resolve()))
    from evaluation import evaluation_metrics

    caught = []
    evaluation_metrics.roc_auc_score = lambda labels, preds: caught.append(np.array(preds)) or 0.5
    rng = np.random.default_rng(8)
    refs = rng.normal(size=(6, 600, 3)).astype(np.float32)
    recons = (refs + rng.normal(0, 0.02, refs.shape)).astype(np.float32)
    for i in range(1, 6):  # a lump the reconstruction does not follow, of varying height
        lump = np.linalg.norm(refs[i] - refs[i, 0], axis=1) < 0.5
        refs[i, lump] *= 1 + 0.1 * i
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    masks = torch.zeros(6, 600)
    evaluation_metrics.ROC_AP(torch.from_numpy(refs), torch.from_numpy(recons), labels, masks)
    return {"refs": refs, "recons": recons, "object": caught[0], "points": caught[1]}


@maker("r3dad_schedule")
def r3dad_schedule(release: dict) -> dict:
    """R3D-AD's noise schedule (`models/diffusion.py: VarianceSchedule(200, 1e-4, 0.05)`, linear): the
    cumulative alpha_bar and the posterior sigmas (flexibility 0) its DDPM sampling uses."""
    sys.path.insert(0, str(release["r3dad"].resolve()))
    from models.diffusion import VarianceSchedule

    schedule = VarianceSchedule(200, 1e-4, 0.05)
    return {"alpha_bars": schedule.alpha_bars.numpy(), "sigmas_inflex": schedule.sigmas_inflex.numpy()}


def release_package(root: Path, name: str, alias: str):
    """A release's package directory (`root/name`, no __init__ needed) importable as `alias`, so that
    releases with a package of the same name (`models`, `utils`) do not collide."""
    import importlib

    package = types.ModuleType(alias)
    package.__path__ = [str(root / name)]
    sys.modules[alias] = package
    return importlib.import_module


@maker("r3dad_network")
def r3dad_network(release: dict) -> dict:
    """R3D-AD's network and sampler (alibalapour/r3d-ad @ 7b1d989, `models/autoencoder.py: AutoEncoder` with
    `models/encoders/pointnet.py: PointNetEncoder` and `models/diffusion.py: PointwiseNet, DiffusionPoint`;
    latent 256, residual, 200 linear steps 1e-4..0.05, as `train_ae.py` sets them) with seeded weights
    (`oracle_weights.seeded_state`, rebuilt by the test): the shape code of 2 clouds of 128 points, the
    noise estimate at steps 17 and 150, and `decode` from stored draws (x_T and one z per step, handed to
    its torch.randn / randn_like in order)."""
    DRAWS_SEED = 1300
    from oracle_weights import seeded_state

    importer = release_package(release["r3dad"], "models", "r3dad_models")
    autoencoder = importer("r3dad_models.autoencoder")
    args = types.SimpleNamespace(
        latent_dim=256, residual=True, num_steps=200, beta_1=1e-4, beta_T=0.05, sched_mode="linear"
    )
    net = autoencoder.AutoEncoder(args).eval()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("diffusion.var_sched")}
    net.load_state_dict({k: torch.from_numpy(v) for k, v in seeded_state(shapes, 13).items()}, strict=False)
    rng = np.random.default_rng(13)
    clouds = np.stack([surface(rng, 128), 0.5 * surface(rng, 128)[:, [2, 0, 1]]]).astype(np.float32)
    steps = np.array([17, 150])
    x_t = rng.normal(size=clouds.shape).astype(np.float32)
    # x_T, then z for t = 200 .. 2: regenerated by the test from their seed rather than stored
    draws = np.random.default_rng(DRAWS_SEED).standard_normal((200, *clouds.shape), dtype=np.float32)
    queue = [torch.from_numpy(d) for d in draws]
    randn, randn_like = torch.randn, torch.randn_like
    torch.randn = lambda *a, **k: queue.pop(0)
    torch.randn_like = lambda x, **k: queue.pop(0)
    try:
        with torch.no_grad():
            code = net.encode(torch.from_numpy(clouds))
            betas = net.diffusion.var_sched.betas[steps.tolist()]
            noise = net.diffusion.net(torch.from_numpy(x_t), beta=betas, context=code)
            decoded = net.decode(code, 128)
    finally:
        torch.randn, torch.randn_like = randn, randn_like
    assert not queue
    return {
        "keys": np.array(list(shapes)),
        "shapes": np.array([json.dumps(v) for v in shapes.values()]),
        "clouds": clouds,
        "code": code.numpy(),
        "steps": steps,
        "x_t": x_t,
        "noise": noise.numpy(),
        "draws_seed": np.int64(DRAWS_SEED),
        "decoded": decoded.numpy(),
    }


class Recorded:
    """Draws of numpy's and Python's global random functions, recorded in call order while a release runs:
    {name: [values]}; the test hands the same values to ad3d's function."""

    def __init__(self, *names: str):
        import random

        self.draws = {name: [] for name in names}
        self._targets = {name: (random if name.startswith("random.") else np.random) for name in names}
        self._saved = {}

    def __enter__(self):
        for name, module in self._targets.items():
            attr = name.split(".")[-1]
            original = getattr(module, attr)
            self._saved[name] = original

            def wrapped(*a, _original=original, _name=name, **k):
                value = _original(*a, **k)
                self.draws[_name].append(np.copy(value))
                return value

            setattr(module, attr, wrapped)
        return self

    def __exit__(self, *exc):
        for name, module in self._targets.items():
            setattr(module, name.split(".")[-1], self._saved[name])


@maker("r3dad_patch_gen")
def r3dad_patch_gen(release: dict) -> dict:
    """R3D-AD's Patch-Gen (alibalapour/r3d-ad @ 7b1d989, `utils/util.py: random_patch`; in the release but
    never called by its training) on 600 points, patch of 40 points, scale 0.05: its draws (the viewpoint's
    index, the sign, the magnitudes) recorded, and the moved cloud and mask."""
    import random

    util = module_from(release["r3dad"] / "utils" / "util.py", "r3dad_util")
    rng = np.random.default_rng(14)
    points = surface(rng, 600)
    random.seed(14)
    np.random.seed(14)
    with Recorded("random.randint", "random.random", "np.random.rand") as rec:
        moved, mask = util.random_patch(points, 40, 0.05)
    # the viewpoint: the one of {-2, 0, 2}^3 whose rays through the patch points carry their displacements
    views = np.array([(x, y, z) for x in (-2, 0, 2) for y in (-2, 0, 2) for z in (-2, 0, 2) if x or y or z], float)
    patch = mask == 1
    step = moved[patch] - points[patch]
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    rays = points[patch][None] - views[:, None]
    rays /= np.linalg.norm(rays, axis=2, keepdims=True)
    viewpoint = views[np.argmax(np.abs(np.einsum("vpi,pi->vp", rays, step)).min(1))]
    return {
        "points": points,
        "viewpoint": viewpoint,
        "sign_draw": np.float64(rec.draws["random.random"][0]),
        "magnitudes": rec.draws["np.random.rand"][0],
        "moved": moved,
        "mask": mask,
    }


@maker("mc4ad_da_gen")
def mc4ad_da_gen(release: dict) -> dict:
    """MC4AD's DA-Gen as its training runs it (hzzzzzhappy/MC4AD @ 27cf768 `code.zip`,
    `datasets/AnomalyShapeNet/transform.py: SphereCropMask(64)`, then `dataset_preprocess.py: trainMerge`'s
    choice of one of the first 32 parts and D ~ U(0.06, 0.12), and `Dataset.generate_pseudo_anomaly` with
    sigma 0.05 and lambda 0.97, the values its default arguments would hold) on 2000 points with normals:
    every draw recorded in order, and the moved cloud. `generate_pseudo_anomaly` is compiled from its file
    (the module imports MinkowskiEngine)."""
    import random

    code = release["mc4ad"]
    transform = module_from(code / "datasets" / "AnomalyShapeNet" / "transform.py", "mc4ad_transform")
    fns = release_functions(
        code / "datasets" / "AnomalyShapeNet" / "dataset_preprocess.py",
        {"generate_pseudo_anomaly": "Dataset"},
        random=random,
    )
    rng = np.random.default_rng(15)
    points = surface(rng, 2000).astype(np.float64)
    normals = rng.normal(size=points.shape) * 0.1 + np.array([0.0, 0.0, 1.0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    sigma, blend = 0.05, 0.97
    np.random.seed(15)
    with Recorded("np.random.randint", "np.random.choice", "np.random.uniform", "np.random.randn") as rec:
        data, centres = transform.SphereCropMask(part_num=64)({"coord": points, "mask": -np.ones(len(points))})
        mask = data["mask"].astype(np.int32)
        shift = np.random.choice(np.arange(0, 32), 1, replace=False)  # trainMerge
        moving = np.isin(mask, shift)
        moved = fns["generate_pseudo_anomaly"](
            None,
            points[moving],
            normals[moving],
            centres[shift[0]],
            distance_to_move=np.random.uniform(0.06, 0.12),
            sigma=sigma,
            lambda_val=blend,
        )
    result = points.copy()
    result[moving] = moved
    return {
        "points": points,
        "normals": normals,
        "sigma": np.float64(sigma),
        "blend": np.float64(blend),
        "centre_draws": np.array(rec.draws["np.random.randint"], np.int64),
        "part": np.int64(shift[0]),
        "distance": np.float64(rec.draws["np.random.uniform"][0]),
        "eta": rec.draws["np.random.randn"][0],
        "beta": np.float64(rec.draws["np.random.choice"][1]),
        "moved": result,
        "moving": moving,
    }


def release_functions(path: Path, names: dict[str, str | None], **extra) -> dict:
    """Functions defined in a release's file, compiled from that file on its own: {name: class or None}.
    For files whose imports (CUDA ops, training frameworks) cannot load here, while the functions we need
    only use torch."""
    import ast

    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        for name, owner in names.items():
            scope = node.body if owner and isinstance(node, ast.ClassDef) and node.name == owner else [node]
            for item in scope:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    found[name] = item
    namespace = {"torch": torch, "nn": torch.nn, "np": np, **extra}
    exec(compile(ast.Module(body=list(found.values()), type_ignores=[]), str(path), "exec"), namespace)
    return {name: namespace[name] for name in names}


@maker("lsfa_losses")
def lsfa_losses(release: dict) -> dict:
    """LSFA's loss pieces (`Adaptation/fusion_pretrain.py` of yuanpengtu/LSFA @ a8dd6d7): the symmetric
    `FeatureFusionBlock.contrastive_loss` pair as `forward` sums it ((c(q, k) + c(k, q)) / 2, T = 1), and
    `euclidean_dist` (squared distances clamped at 50) under the nearest-queue mean of the compactness
    term. Tensor.cuda() (its labels) is the identity here."""
    fns = release_functions(
        release["lsfa"] / "Adaptation" / "fusion_pretrain.py",
        {"contrastive_loss": "FeatureFusionBlock", "euclidean_dist": None},
    )
    rng = np.random.default_rng(9)
    q = rng.normal(size=(64, 16)).astype(np.float32)
    k = (q + rng.normal(0, 0.8, q.shape)).astype(np.float32)
    features = (rng.normal(size=(40, 12)) * rng.choice([1.0, 4.0], (40, 1))).astype(np.float32)  # far ones clamp
    queue = (rng.normal(size=(300, 12)) * rng.choice([0.3, 3.0], (300, 1))).astype(np.float32)
    cuda, torch.Tensor.cuda = torch.Tensor.cuda, lambda self, *a, **kw: self
    try:
        block = types.SimpleNamespace(T=1)
        loss = fns["contrastive_loss"](block, torch.from_numpy(q), torch.from_numpy(k))
        back = fns["contrastive_loss"](block, torch.from_numpy(k), torch.from_numpy(q))
    finally:
        torch.Tensor.cuda = cuda
    dist = fns["euclidean_dist"](torch.from_numpy(features), torch.from_numpy(queue))
    return {
        "q": q,
        "k": k,
        "contrast": np.float32((loss + back) / 2),
        "features": features,
        "queue": queue,
        "compactness": np.float32(dist.min(1).values.mean()),
    }


def module_from(path: Path, name: str):
    """A release's module loaded from its file under a name of our own (several releases have a `utils`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@maker("lsfa_scoring")
def lsfa_scoring(release: dict) -> dict:
    """LSFA's decision layer (yuanpengtu/LSFA @ a8dd6d7, `FeatureExtract/feature_extractors/features_double_lib.py`,
    M3DM's `Features`): `run_coreset` (f_coreset 1: every patch kept, so the bank is the same whatever the
    coreset), per training scan the standardisation and distances of `add_sample_to_late_fusion_mem_bank` and
    its `compute_single_s_s_map` (reweighted max, n_reweight 3; bilinear to 224 and `utils/utils.py:
    KNNGaussianBlur(4)`), `run_late_fusion` (SGDOneClassSVM, random_state 42), then `compute_s_s_map` on test
    scans: their fused object scores and maps. Patch features: 4 bank, 3 normal and 3 test scans of 7 x 7 patches
    (xyz 10-d, rgb 14-d, at different scales, one test scan with an odd patch); compiled from that file (its
    imports load the networks and CUDA ops)."""
    import math

    from sklearn import linear_model

    root = release["lsfa"] / "FeatureExtract"
    blur = module_from(root / "utils" / "utils.py", "lsfa_release_utils").KNNGaussianBlur(4)
    names = ("run_coreset", "compute_single_s_s_map", "run_late_fusion", "compute_s_s_map")
    fns = release_functions(
        root / "feature_extractors" / "features_double_lib.py", dict.fromkeys(names, "Features"), math=math
    )
    rng = np.random.default_rng(11)
    base_xyz, base_rgb = rng.normal(size=(49, 10)), rng.normal(size=(49, 14))

    def scan(odd: bool = False) -> tuple[np.ndarray, np.ndarray]:
        xyz = 2.0 + 0.5 * base_xyz + 0.3 * rng.normal(size=(49, 10))
        rgb = 3.0 * base_rgb + 0.8 * rng.normal(size=(49, 14))
        if odd:
            xyz[20] += 2.5
            rgb[30] += 6.0
        return xyz.astype(np.float32), rgb.astype(np.float32)

    # the release scores the bank's own scans for its fusers; with every patch kept (f_coreset 1) those
    # scores would all be 0, so three other normal scans stand in for them here
    train, normal, test = [scan() for _ in range(4)], [scan() for _ in range(3)], [scan(), scan(odd=True), scan()]
    state = types.SimpleNamespace(
        patch_xyz_lib=[torch.from_numpy(x) for x, _ in train],
        patch_rgb_lib=[torch.from_numpy(r) for _, r in train],
        f_coreset=1,
        n_reweight=3,
        image_size=224,
        blur=blur,
        detect_fuser=linear_model.SGDOneClassSVM(random_state=42),
        seg_fuser=linear_model.SGDOneClassSVM(random_state=42),
        s_lib=[],
        s_map_lib=[],
        image_preds=[],
        image_labels=[],
        pixel_preds=[],
        pixel_labels=[],
        predictions=[],
        gts=[],
    )
    state.compute_single_s_s_map = types.MethodType(fns["compute_single_s_s_map"], state)
    fns["run_coreset"](state)
    for xyz, rgb in normal:  # add_sample_to_late_fusion_mem_bank after its feature extraction
        xyz_patch = (torch.from_numpy(xyz) - state.xyz_mean) / state.xyz_std
        rgb_patch = (torch.from_numpy(rgb) - state.rgb_mean) / state.rgb_std
        s_xyz, map_xyz = state.compute_single_s_s_map(
            xyz_patch, torch.cdist(xyz_patch, state.patch_xyz_lib), (7, 7), modal="xyz"
        )
        s_rgb, map_rgb = state.compute_single_s_s_map(
            rgb_patch, torch.cdist(rgb_patch, state.patch_rgb_lib), (7, 7), modal="rgb"
        )
        state.s_lib.append(torch.tensor([[s_xyz, 0.1 * s_rgb]]))
        state.s_map_lib.append(torch.cat([map_xyz, 0.1 * map_rgb], dim=0).squeeze().reshape(2, -1).permute(1, 0))
    fns["run_late_fusion"](state)
    mask = torch.zeros(1, 224, 224)
    for xyz, rgb in test:
        args = (torch.from_numpy(xyz), torch.from_numpy(rgb), None, mask, 0, None, None, None, None, None)
        fns["compute_s_s_map"](state, *args)
    return {
        "train_xyz": np.stack([x for x, _ in train]),
        "train_rgb": np.stack([r for _, r in train]),
        "normal_xyz": np.stack([x for x, _ in normal]),
        "normal_rgb": np.stack([r for _, r in normal]),
        "test_xyz": np.stack([x for x, _ in test]),
        "test_rgb": np.stack([r for _, r in test]),
        "statistics": np.array([state.xyz_mean, state.xyz_std, state.rgb_mean, state.rgb_std], np.float32),
        "normal_pairs": state.s_lib.numpy(),
        "object_weights": state.detect_fuser.coef_,
        "map_weights": state.seg_fuser.coef_,
        "object_scores": np.concatenate(state.image_preds).astype(np.float64),
        "maps": np.stack(state.predictions).astype(np.float32),
    }


@maker("point_mae_encoder")
def point_mae_encoder(release: dict) -> dict:
    """M3DM's Point-MAE encoder (nomewang/M3DM @ 62b7f46, `models/models.py: PointTransformer`, 64 groups of
    32, its fixed 12 blocks of 384) with seeded weights (`oracle_weights.seeded_state` over its state-dict keys;
    the test rebuilds them) on 1500 raw points far from the origin: the groups' features (blocks 3, 7 and
    11, normed), centres and members. Its CUDA ops and timm layers stood in for (`cuda_stand_ins`)."""
    from oracle_weights import seeded_state

    cuda_stand_ins()
    models = module_from(release["m3dm"] / "models" / "models.py", "m3dm_models")
    net = models.PointTransformer(group_size=32, num_group=64).eval()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    net.load_state_dict({k: torch.from_numpy(v) for k, v in seeded_state(shapes, 12).items()})
    rng = np.random.default_rng(12)
    points = (surface(rng, 1500) * np.float32(40) + np.float32([15, -7, 120])).astype(np.float32)
    with torch.no_grad():
        features, centres, members, centre_idx = net(torch.from_numpy(points).T[None].contiguous())
    return {
        "keys": np.array(list(shapes)),
        "shapes": np.array([json.dumps(v) for v in shapes.values()]),
        "points": points,
        "features": features[0].T.numpy(),
        "centres": centres[0].numpy(),
        "centre_idx": centre_idx[0].numpy().astype(np.int64),
        "members": members[0].numpy().astype(np.int64),
    }


@maker("m3dm_point_tokens")
def m3dm_point_tokens(release: dict) -> dict:
    """M3DM's point tokens (nomewang/M3DM @ 62b7f46): `feature_extractors/features.py: Features.__call__`
    (group features to points by `models/pointnet2_utils.py: interpolating_points`) and
    `feature_extractors/multiple_features.py: PointFeatures.add_sample_to_mem_bank` (the zero-filled 224 x 224
    grid, 3 x 3 average, adaptive pool to 56), compiled from those files (their imports need CUDA ops); the
    Point-MAE network stood in for by seeded group features and centres; pools as its __init__ builds them."""
    sys.path.insert(0, str(release["m3dm"].resolve()))
    from models.pointnet2_utils import interpolating_points
    from utils.mvtec3d_util import organized_pc_to_unorganized_pc

    root = release["m3dm"] / "feature_extractors"
    call = release_functions(root / "features.py", {"__call__": "Features"}, interpolating_points=interpolating_points)
    add = release_functions(
        root / "multiple_features.py",
        {"add_sample_to_mem_bank": "PointFeatures"},
        organized_pc_to_unorganized_pc=organized_pc_to_unorganized_pc,
    )
    rng = np.random.default_rng(10)
    rows, cols = np.meshgrid(np.arange(224), np.arange(224), indexing="ij")
    valid = (rows - 112) ** 2 / 80**2 + (cols - 100) ** 2 / 60**2 < 1  # an elliptic part on an empty grid
    xyz = np.zeros((224, 224, 3), np.float32)
    xyz[valid] = np.c_[cols[valid] / 500, rows[valid] / 500, 0.3 + 0.01 * rng.standard_normal(valid.sum())]
    points = xyz[valid]
    centre_idx = rng.choice(len(points), 200, replace=False)
    group_features = rng.normal(size=(200, 24)).astype(np.float32)

    class StandIn:
        device, image_size = "cpu", 224
        average, resize = torch.nn.AvgPool2d(3, stride=1), torch.nn.AdaptiveAvgPool2d((56, 56))

        def __init__(self):
            self.patch_lib = []

        def deep_feature_extractor(self, rgb, pts):
            centres = torch.from_numpy(points[centre_idx])[None]
            features = torch.from_numpy(group_features.T.copy())[None]
            return torch.zeros(1), features, centres, None, torch.from_numpy(centre_idx)

        __call__ = call["__call__"]

    stand_in = StandIn()
    add["add_sample_to_mem_bank"](stand_in, (torch.zeros(1), torch.from_numpy(xyz).permute(2, 0, 1)[None]))
    return {
        "xyz": xyz,
        "centre_idx": centre_idx,
        "group_features": group_features,
        "tokens": stand_in.patch_lib[0].numpy(),
    }


@maker("simple3d_scores")
def simple3d_scores(release: dict) -> dict:
    """Simple3D (hustCYQ/MiniShift-Simple3D @ bece29a) as its README runs it on Anomaly-ShapeNet, at small sizes:
    `feature_extractors/FPFH.py: get_fpfh_features` (Open3D normals of 10 points, MSND with num_MSND 2, LFSA) for
    3 training and 2 test clouds of 3000 points (max_nn 10, 256 centres of 32 points), then `features.py:
    compute_anomay_scores` (nearest bank distance, interpolation, the 1024-centre smoothing, mean of the top 80)
    against the uncompressed bank: the release's coreset projects at random, unseeded. CUDA ops stood in
    (`cuda_stand_ins`), `.cuda()` the identity, cv2 (used only to save pictures) an empty module."""
    import trimesh

    cuda_stand_ins()
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    for name in [m for m in sys.modules if m.split(".")[0] in ("utils", "data", "feature_extractors")]:
        del sys.modules[name]  # other releases' packages of the same names
    sys.path.insert(0, str(release["simple3d"].resolve()))
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        from feature_extractors.FPFH import FPFHFeatures

        args = types.SimpleNamespace(
            dataset="shapenet",
            device="cpu",
            max_nn=10,
            num_group=256,
            group_size=32,
            use_MSND=True,
            num_MSND=2,
            use_LFSA=True,
            vis_save=False,
            feature="FPFH",
        )
        method = FPFHFeatures(args=args)
        mesh = trimesh.creation.capsule(height=1.0, radius=0.4)
        rng = np.random.default_rng(25)
        clouds = []
        for seed in range(5):
            pts = trimesh.sample.sample_surface(mesh, 3000, seed=seed)[0] + rng.normal(0, 0.003, (3000, 3))
            clouds.append(pts.astype(np.float32))
        bump = np.linalg.norm(clouds[4] - clouds[4][0], axis=1) < 0.15
        clouds[4][bump] += 0.05 * unit(clouds[4][bump] * [1, 1, 0] + [0, 0, 1e-6])
        features, centres = [], []
        for cloud in clouds:
            feats, _, _, centre = method.get_features(torch.from_numpy(cloud.astype(np.float64))[None])
            features.append(feats.numpy())
            centres.append(centre[0].numpy())
        method.patch_lib = torch.from_numpy(np.concatenate(features[:3]))
        for cloud in clouds[3:]:
            method.predict(torch.from_numpy(cloud.astype(np.float64))[None], torch.zeros(1, 1, 3000), 0)
    finally:
        torch.Tensor.cuda = original
    return {
        "clouds": np.stack(clouds),
        "features": np.stack(features),
        "centres": np.stack(centres),
        "point_scores": np.stack(method.predictions),
        "object_scores": np.array([float(s) for s in method.image_preds], np.float32),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--musc", type=Path, required=True, help="checkout of HUST-SLOW/MuSc-V2 @ b5e911d")
    parser.add_argument("--mc4ad", type=Path, required=True, help="code/ of hzzzzzhappy/MC4AD @ 27cf768's code.zip")
    parser.add_argument("--r3dad", type=Path, required=True, help="checkout of alibalapour/r3d-ad @ 7b1d989")
    parser.add_argument("--lsfa", type=Path, required=True, help="checkout of yuanpengtu/LSFA @ a8dd6d7")
    parser.add_argument("--m3dm", type=Path, required=True, help="checkout of nomewang/M3DM @ 62b7f46")
    parser.add_argument("--simple3d", type=Path, required=True, help="checkout of hustCYQ/MiniShift-Simple3D @ bece29a")
    parser.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    args = parser.parse_args(argv)
    # torchvision's compiled ops are not needed (only its transforms are): skip their registration, which
    # fails where the installed torchvision build does not match torch's
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    sys.path.insert(0, str(args.musc.resolve()))
    HERE.mkdir(exist_ok=True)
    for name in args.only or MAKERS:
        torch.manual_seed(0)
        arrays = MAKERS[name](
            {key: getattr(args, key) for key in ("musc", "mc4ad", "r3dad", "lsfa", "m3dm", "simple3d")}
        )
        np.savez_compressed(HERE / f"{name}.npz", **arrays)
        print(f"wrote {name}.npz: {', '.join(f'{k} {np.shape(v)}' for k, v in arrays.items())}")


if __name__ == "__main__":
    main()
