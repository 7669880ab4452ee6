"""M3DM's decision layer: per-modality memory-bank scores fused into one, two ways.

ad3d's (LSFA's default): each modality's patch scores standardised on held-out normal scans, fused by a linear
one-class SVM on the (rgb, xyz) pairs, weights floored, or summed. The release's (`scoring="release"`, as
yuanpengtu/LSFA @ a8dd6d7 `FeatureExtract/feature_extractors/features_double_lib.py` computes it, M3DM's
`Features`): features standardised by scalar statistics (the release takes both means from the xyz bank and
both stds from the RGB bank), the object score per modality PatchCore's reweighted max, the maps per modality
brought to 224 x 224 and blurred, then SGDOneClassSVM(random_state=42) fuses (s_xyz, 0.1 s_rgb) for the object
and per pixel for the map, fitted on the training scans' own scores.
"""

from __future__ import annotations

import numpy as np

RGB_SCALE = 0.1  # the release's weight on the RGB score before its one-class SVM
MAP_SIZE = 224  # the release's maps and the image its pixel fuser learns on


# --- ad3d's ---------------------------------------------------------------------------------------------
def fit_standard_fusion(normal: dict[str, np.ndarray], fusion: str, seed: int) -> dict[str, float]:
    """From normal patch scores per modality: each modality's mean and std, and for fusion='ocsvm' with two
    modalities a linear one-class SVM on the standardised (rgb, xyz) pairs of patches that hold points."""
    params = {f"{m}_mean": float(np.nanmean(v)) for m, v in normal.items()}
    params.update({f"{m}_std": float(np.nanstd(v) + 1e-6) for m, v in normal.items()})
    if fusion == "ocsvm" and len(normal) == 2:
        from sklearn.linear_model import SGDOneClassSVM

        pairs = np.stack([standardised(normal, params, m) for m in ("rgb", "xyz")], 1)
        pairs = pairs[np.isfinite(pairs).all(1)]
        svm = SGDOneClassSVM(nu=0.5, max_iter=1000, random_state=seed).fit(pairs)
        params.update(w_rgb=float(svm.coef_[0]), w_xyz=float(svm.coef_[1]), offset=float(svm.offset_[0]))
    return params


def standardised(scores: dict[str, np.ndarray], params: dict[str, float], m: str) -> np.ndarray:
    return (scores[m] - params[f"{m}_mean"]) / params[f"{m}_std"]


def standard_fused(scores: dict[str, np.ndarray], params: dict[str, float], fusion: str) -> np.ndarray:
    """One score per patch: the standardised score of a single modality, else the SVM's negated decision
    value (each weight floored at 0.1, so that neither modality is dropped) or the sum."""
    if len(scores) == 1:
        (m,) = scores
        return standardised(scores, params, m)
    rgb = standardised(scores, params, "rgb")
    xyz = np.nan_to_num(standardised(scores, params, "xyz"))  # a patch without points: neutral
    if fusion == "ocsvm":
        w_rgb, w_xyz = max(params["w_rgb"], 0.1), max(params["w_xyz"], 0.1)
        return -(params["offset"] - (w_rgb * rgb + w_xyz * xyz))
    return rgb + xyz


# --- the release's --------------------------------------------------------------------------------------
def release_statistics(features: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """(mean, std) scalars per modality as `Features.run_coreset` sets them: the mean of the xyz bank and the
    (unbiased) std of the RGB bank for both modalities; a modality alone uses its own."""
    mean_of = features["xyz"] if "xyz" in features else features["rgb"]
    std_of = features["rgb"] if "rgb" in features else features["xyz"]
    mean, std = float(np.mean(mean_of, dtype=np.float64)), float(np.std(std_of, ddof=1, dtype=np.float64))
    return {m: (mean, std) for m in features}


def release_map(patch_scores: np.ndarray, blur: float) -> np.ndarray:
    """(224, 224): a patch map (h, w) resized bilinearly as `compute_single_s_s_map` does, then blurred."""
    import torch
    import torch.nn.functional as F

    from ad3d.detectors.scoring import blur_8bit

    image = F.interpolate(
        torch.as_tensor(np.asarray(patch_scores, np.float32))[None, None], size=(MAP_SIZE, MAP_SIZE), mode="bilinear"
    )[0, 0].numpy()
    return blur_8bit(image, blur) if blur else image


def release_pairs(xyz: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(N, 2) rows (s_xyz, 0.1 s_rgb): what the release's fusers see."""
    return np.stack([np.ravel(xyz), RGB_SCALE * np.ravel(rgb)], 1).astype(np.float32)


def fit_release_fuser(pairs: np.ndarray) -> np.ndarray:
    """(2,) weights w of SGDOneClassSVM(random_state=42) fitted on pairs; its `score_samples` is pairs @ w,
    which the release takes as the anomaly score."""
    from sklearn.linear_model import SGDOneClassSVM

    return SGDOneClassSVM(random_state=42).fit(pairs).coef_.astype(np.float64)
