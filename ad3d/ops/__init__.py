"""Point-cloud ops every detector leans on, compiled from cuda_ops/ (C++ CPU, CUDA GPU).

fps and knn are exact; CPU tensors run the C++ kernels (OpenMP), CUDA tensors the CUDA kernels, and
when the extension cannot be built a vectorised torch fallback gives the same results (one warning).
"""

from ad3d.ops._ext import extension_status, load_extension
from ad3d.ops.coreset import greedy_coreset
from ad3d.ops.neighbours import ball_query, chamfer, interpolate, knn
from ad3d.ops.sampling import even_subset, fps, group_points

__all__ = [
    "fps",
    "even_subset",
    "group_points",
    "knn",
    "ball_query",
    "chamfer",
    "greedy_coreset",
    "interpolate",
    "load_extension",
    "extension_status",
]
