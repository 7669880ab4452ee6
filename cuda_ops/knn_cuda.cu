// Exact k nearest neighbours on the GPU, k <= 64. Small clouds: tiled brute force, each thread owns
// one query and keeps a sorted top-k while reference points stream through shared memory in tiles.
// Large clouds: a uniform grid (built by the caller) searched ring by ring (knn_grid.h).
#include <cfloat>
#include <cuda_runtime.h>

#ifndef AD3D_WITH_CUDA
#define AD3D_WITH_CUDA
#endif
#include "cuda_math.cuh"
#include "knn_grid.h"
#include "ops.h"

namespace ad3d {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 512;

template <typename T, int KMAX>
__global__ void __launch_bounds__(kThreads) knn_kernel(const T* __restrict__ query, const int64_t* __restrict__ q_lengths,
                                                       int64_t m_max, const T* __restrict__ ref,
                                                       const int64_t* __restrict__ r_lengths, int64_t n_max, int k,
                                                       T* __restrict__ dist2, int64_t* __restrict__ idx) {
  __shared__ T tile[3 * kTile];
  const int64_t b = blockIdx.y;
  const int64_t qi = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t m = q_lengths[b], n = r_lengths[b];
  const bool active = qi < m;
  const T* q = query + (b * m_max + (active ? qi : 0)) * 3;
  const T qx = q[0], qy = q[1], qz = q[2];
  const T* r = ref + b * n_max * 3;
  T best_d[KMAX];
  int64_t best_i[KMAX];
#pragma unroll
  for (int j = 0; j < KMAX; ++j) {
    best_d[j] = T(INFINITY);
    best_i[j] = -1;
  }
  for (int64_t base = 0; base < n; base += kTile) {
    const int count = static_cast<int>(n - base < kTile ? n - base : kTile);
    __syncthreads();
    for (int t = threadIdx.x; t < 3 * count; t += kThreads) tile[t] = r[3 * base + t];
    __syncthreads();
    if (!active) continue;
    for (int t = 0; t < count; ++t) {
      const T d = rn_sq_dist(qx, qy, qz, tile[3 * t], tile[3 * t + 1], tile[3 * t + 2]);
      if (d < best_d[k - 1]) topk_insert(best_d, best_i, k, d, base + t);
    }
  }
  if (!active) return;
  T* od = dist2 + (b * m_max + qi) * k;
  int64_t* oi = idx + (b * m_max + qi) * k;
  for (int j = 0; j < k; ++j) {
    od[j] = best_d[j];
    oi[j] = best_i[j];
  }
}

template <typename T, int KMAX>
__global__ void __launch_bounds__(kThreads) knn_grid_kernel(GridView<T> grid, const T* __restrict__ query, int64_t m,
                                                            int k, T* __restrict__ dist2, int64_t* __restrict__ idx) {
  const int64_t qi = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (qi >= m) return;
  T best_d[KMAX];
  int64_t best_i[KMAX];
  for (int j = 0; j < KMAX; ++j) {
    best_d[j] = T(INFINITY);
    best_i[j] = -1;
  }
  grid_search(grid, query + 3 * qi, k, best_d, best_i);
  for (int j = 0; j < k; ++j) {
    dist2[qi * k + j] = best_d[j];
    idx[qi * k + j] = best_i[j];
  }
}

template <typename T, int KMAX>
cudaError_t launch_grid(const GridView<T>& grid, const T* query, int64_t m, int k, T* dist2, int64_t* idx,
                        cudaStream_t stream) {
  knn_grid_kernel<T, KMAX><<<static_cast<unsigned>((m + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      grid, query, m, k, dist2, idx);
  return cudaGetLastError();
}

template <typename T, int KMAX>
cudaError_t launch(const T* query, const int64_t* ql, int64_t m_max, const T* ref, const int64_t* rl, int64_t n_max,
                   int64_t b, int k, T* dist2, int64_t* idx, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((m_max + kThreads - 1) / kThreads), static_cast<unsigned>(b));
  knn_kernel<T, KMAX><<<grid, kThreads, 0, stream>>>(query, ql, m_max, ref, rl, n_max, k, dist2, idx);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t knn_cuda(const T* query, const int64_t* q_lengths, int64_t m_max, const T* ref, const int64_t* r_lengths,
                     int64_t n_max, int64_t b, int k, T* dist2, int64_t* idx, cudaStream_t stream) {
  if (b == 0 || m_max == 0) return cudaSuccess;
  if (k <= 8) return launch<T, 8>(query, q_lengths, m_max, ref, r_lengths, n_max, b, k, dist2, idx, stream);
  if (k <= 16) return launch<T, 16>(query, q_lengths, m_max, ref, r_lengths, n_max, b, k, dist2, idx, stream);
  if (k <= 32) return launch<T, 32>(query, q_lengths, m_max, ref, r_lengths, n_max, b, k, dist2, idx, stream);
  if (k <= 64) return launch<T, 64>(query, q_lengths, m_max, ref, r_lengths, n_max, b, k, dist2, idx, stream);
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t knn_grid_cuda(const GridView<T>& grid, const T* query, int64_t m, int k, T* dist2, int64_t* idx,
                          cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  if (k <= 8) return launch_grid<T, 8>(grid, query, m, k, dist2, idx, stream);
  if (k <= 16) return launch_grid<T, 16>(grid, query, m, k, dist2, idx, stream);
  if (k <= 32) return launch_grid<T, 32>(grid, query, m, k, dist2, idx, stream);
  if (k <= 64) return launch_grid<T, 64>(grid, query, m, k, dist2, idx, stream);
  return cudaErrorInvalidValue;
}

template cudaError_t knn_grid_cuda<float>(const GridView<float>&, const float*, int64_t, int, float*, int64_t*,
                                          cudaStream_t);
template cudaError_t knn_grid_cuda<double>(const GridView<double>&, const double*, int64_t, int, double*, int64_t*,
                                           cudaStream_t);
template cudaError_t knn_cuda<float>(const float*, const int64_t*, int64_t, const float*, const int64_t*, int64_t,
                                     int64_t, int, float*, int64_t*, cudaStream_t);
template cudaError_t knn_cuda<double>(const double*, const int64_t*, int64_t, const double*, const int64_t*, int64_t,
                                      int64_t, int, double*, int64_t*, cudaStream_t);

}  // namespace ad3d
