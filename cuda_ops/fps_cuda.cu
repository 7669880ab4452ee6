// Exact farthest-point sampling on the GPU: one block per cloud runs all k steps in one launch.
// Each step: every thread updates the running distances of its strided points and keeps its best
// (largest distance, lowest index on ties); a warp-shuffle then shared-memory arg-max picks the next.
#include <cfloat>
#include <climits>
#include <cuda_runtime.h>

#ifndef AD3D_WITH_CUDA
#define AD3D_WITH_CUDA
#endif
#include "cuda_math.cuh"
#include "ops.h"

namespace ad3d {
namespace {

constexpr int kBlock = 512;

template <typename T>
__device__ __forceinline__ bool better(T d, int64_t i, T best_d, int64_t best_i) {
  return d > best_d || (d == best_d && i < best_i);
}

// After this, lane 0 holds the warp's best (value, index) under `better`.
template <typename T>
__device__ __forceinline__ void warp_argmax(T& best, int64_t& best_i) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T other = __shfl_down_sync(0xffffffffu, best, offset);
    const int64_t other_i = __shfl_down_sync(0xffffffffu, best_i, offset);
    if (better(other, other_i, best, best_i)) {
      best = other;
      best_i = other_i;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock) fps_kernel(const T* __restrict__ points, const int64_t* __restrict__ lengths,
                                                     const int64_t* __restrict__ starts, int64_t n_max, int64_t k,
                                                     T* __restrict__ work, int64_t* __restrict__ out) {
  __shared__ T warp_val[kBlock / 32];
  __shared__ int64_t warp_idx[kBlock / 32];
  __shared__ int64_t next;
  const int64_t b = blockIdx.x;
  const T* p = points + b * n_max * 3;
  T* dist = work + b * n_max;
  const int64_t n = lengths[b];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t i = tid; i < n; i += kBlock) dist[i] = T(INFINITY);
  int64_t current = starts[b];
  for (int64_t step = 0; step < k; ++step) {
    if (tid == 0) out[b * k + step] = current;
    const T sx = p[3 * current], sy = p[3 * current + 1], sz = p[3 * current + 2];
    T best = T(-1);
    int64_t best_i = LLONG_MAX;
    for (int64_t i = tid; i < n; i += kBlock) {
      const T d = rn_sq_dist(p[3 * i], p[3 * i + 1], p[3 * i + 2], sx, sy, sz);
      const T dd = d < dist[i] ? d : dist[i];
      dist[i] = dd;
      if (better(dd, i, best, best_i)) {
        best = dd;
        best_i = i;
      }
    }
    warp_argmax(best, best_i);
    if (lane == 0) {
      warp_val[warp] = best;
      warp_idx[warp] = best_i;
    }
    __syncthreads();
    if (warp == 0) {
      best = lane < kBlock / 32 ? warp_val[lane] : T(-1);
      best_i = lane < kBlock / 32 ? warp_idx[lane] : LLONG_MAX;
      warp_argmax(best, best_i);
      if (lane == 0) next = best_i;
    }
    __syncthreads();
    current = next;
  }
}

}  // namespace

template <typename T>
cudaError_t fps_cuda(const T* points, const int64_t* lengths, const int64_t* starts, int64_t b, int64_t n_max,
                     int64_t k, T* workspace, int64_t* out, cudaStream_t stream) {
  if (b == 0 || k == 0) return cudaSuccess;
  fps_kernel<T><<<static_cast<unsigned>(b), kBlock, 0, stream>>>(points, lengths, starts, n_max, k, workspace, out);
  return cudaGetLastError();
}

template cudaError_t fps_cuda<float>(const float*, const int64_t*, const int64_t*, int64_t, int64_t, int64_t, float*,
                                     int64_t*, cudaStream_t);
template cudaError_t fps_cuda<double>(const double*, const int64_t*, const int64_t*, int64_t, int64_t, int64_t,
                                      double*, int64_t*, cudaStream_t);

}  // namespace ad3d
