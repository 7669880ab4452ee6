// Kernel entry points on plain pointers (no torch types), shared by bindings.cpp and the .cu files.
#pragma once
#include <cstdint>

#include "knn_grid.h"

namespace ad3d {

// Exact farthest-point sampling of one cloud: points (n, 3) -> k indices, starting at `start`,
// ties broken by the lowest index; identical to the naive O(n k) loop.
template <typename T>
void fps_cpu(const T* points, int64_t n, int64_t k, int64_t start, int64_t* out);

// Exact k nearest neighbours of m queries among n reference points, ascending when `sorted`.
// dist2 (m, k) squared distances, idx (m, k) indices into ref. Uses `threads` OpenMP threads.
template <typename T>
void knn_cpu(const T* query, int64_t m, const T* ref, int64_t n, int k, bool sorted, int threads, T* dist2,
             int64_t* idx);

}  // namespace ad3d

#ifdef AD3D_WITH_CUDA
#include <cuda_runtime.h>
namespace ad3d {
// Batched launchers; arrays are padded (b, n_max, 3) with per-cloud lengths; return the launch error.
// fps_cuda's workspace holds b * n_max values; part_val and part_idx 2 * b * fps_cuda_parts(b, n_max).
int64_t fps_cuda_parts(int64_t b, int64_t n_max);
template <typename T>
cudaError_t fps_cuda(const T* points, const int64_t* lengths, const int64_t* starts, int64_t b, int64_t n_max,
                     int64_t k, T* workspace, T* part_val, int64_t* part_idx, int64_t* out, cudaStream_t stream);
template <typename T>
cudaError_t knn_cuda(const T* query, const int64_t* q_lengths, int64_t m_max, const T* ref,
                     const int64_t* r_lengths, int64_t n_max, int64_t b, int k, T* dist2, int64_t* idx,
                     cudaStream_t stream);
// Grid search for one cloud (large reference clouds); the grid is built by the caller.
template <typename T>
cudaError_t knn_grid_cuda(const GridView<T>& grid, const T* query, int64_t m, int k, T* dist2, int64_t* idx,
                          cudaStream_t stream);
}  // namespace ad3d
#endif
