// Exact farthest-point sampling on the GPU. Each step: every thread updates the running distances of
// its strided points and keeps its best (largest distance, lowest index on ties); a warp-shuffle then
// shared-memory arg-max picks the next point. Clouds below kSplitMinPoints run all k steps in one block
// (one launch); larger ones spread each step over many blocks, one launch per step, each block first
// reducing the previous step's per-block winners to learn the current point.
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
constexpr int64_t kSplitMinPoints = 1 << 15;
constexpr int64_t kPointsPerThread = 4;  // split clouds: blocks enough for about this many points a thread
constexpr int64_t kMaxBatchToSplit = 256;  // a batch this large fills the GPU with one block per cloud

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

// The block's best (value, index) under `better`, returned in every thread. Call from all threads.
template <typename T>
__device__ __forceinline__ void block_argmax(T& best, int64_t& best_i) {
  __shared__ T warp_val[kBlock / 32];
  __shared__ int64_t warp_idx[kBlock / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_argmax(best, best_i);
  if (lane == 0) {
    warp_val[warp] = best;
    warp_idx[warp] = best_i;
  }
  __syncthreads();
  best = lane < kBlock / 32 ? warp_val[lane] : T(-1);  // every warp reduces the warp winners: no broadcast step
  best_i = lane < kBlock / 32 ? warp_idx[lane] : LLONG_MAX;
  warp_argmax(best, best_i);
  best = __shfl_sync(0xffffffffu, best, 0);
  best_i = __shfl_sync(0xffffffffu, best_i, 0);
  __syncthreads();  // the shared arrays are free for the next call
}

// One block per cloud, all k steps.
template <typename T>
__global__ void __launch_bounds__(kBlock) fps_kernel(const T* __restrict__ points, const int64_t* __restrict__ lengths,
                                                     const int64_t* __restrict__ starts, int64_t n_max, int64_t k,
                                                     T* __restrict__ work, int64_t* __restrict__ out) {
  const int64_t b = blockIdx.x;
  const T* p = points + b * n_max * 3;
  T* dist = work + b * n_max;
  const int64_t n = lengths[b];
  const int tid = threadIdx.x;
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
    block_argmax(best, best_i);
    current = best_i;
  }
}

// One step of a split cloud: grid (parts, b). Winners of step s go to half (s & 1) of part_val/part_idx.
template <typename T>
__global__ void __launch_bounds__(kBlock) fps_split_step(const T* __restrict__ points,
                                                         const int64_t* __restrict__ lengths,
                                                         const int64_t* __restrict__ starts, int64_t n_max, int64_t k,
                                                         int64_t step, T* __restrict__ work, T* __restrict__ part_val,
                                                         int64_t* __restrict__ part_idx, int64_t* __restrict__ out) {
  const int64_t b = blockIdx.y, n = lengths[b], parts = gridDim.x, half = gridDim.y * parts;
  const T* p = points + b * n_max * 3;
  T* dist = work + b * n_max;
  int64_t current = starts[b];
  if (step > 0) {
    const int64_t prev = ((step - 1) & 1) * half + b * parts;
    T best = threadIdx.x < parts ? part_val[prev + threadIdx.x] : T(-1);
    int64_t best_i = threadIdx.x < parts ? part_idx[prev + threadIdx.x] : LLONG_MAX;
    block_argmax(best, best_i);
    current = best_i;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) out[b * k + step] = current;
  if (step == k - 1) return;
  const T sx = p[3 * current], sy = p[3 * current + 1], sz = p[3 * current + 2];
  T best = T(-1);
  int64_t best_i = LLONG_MAX;
  for (int64_t i = blockIdx.x * kBlock + threadIdx.x; i < n; i += parts * kBlock) {
    const T d = rn_sq_dist(p[3 * i], p[3 * i + 1], p[3 * i + 2], sx, sy, sz);
    const T dd = step == 0 || d < dist[i] ? d : dist[i];
    dist[i] = dd;
    if (better(dd, i, best, best_i)) {
      best = dd;
      best_i = i;
    }
  }
  block_argmax(best, best_i);
  if (threadIdx.x == 0) {
    part_val[(step & 1) * half + b * parts + blockIdx.x] = best;
    part_idx[(step & 1) * half + b * parts + blockIdx.x] = best_i;
  }
}

}  // namespace

int64_t fps_cuda_parts(int64_t b, int64_t n_max) {
  if (n_max < kSplitMinPoints || b > kMaxBatchToSplit) return 1;
  const int64_t parts = (n_max + kPointsPerThread * kBlock - 1) / (kPointsPerThread * kBlock);
  return parts < kBlock ? parts : kBlock;  // the next step reduces the parts with one block's threads
}

template <typename T>
cudaError_t fps_cuda(const T* points, const int64_t* lengths, const int64_t* starts, int64_t b, int64_t n_max,
                     int64_t k, T* workspace, T* part_val, int64_t* part_idx, int64_t* out, cudaStream_t stream) {
  if (b == 0 || k == 0) return cudaSuccess;
  const int64_t parts = fps_cuda_parts(b, n_max);
  if (parts == 1) {
    fps_kernel<T><<<static_cast<unsigned>(b), kBlock, 0, stream>>>(points, lengths, starts, n_max, k, workspace, out);
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(b));
  for (int64_t step = 0; step < k; ++step) {
    fps_split_step<T><<<grid, kBlock, 0, stream>>>(points, lengths, starts, n_max, k, step, workspace, part_val,
                                                  part_idx, out);
  }
  return cudaGetLastError();
}

template cudaError_t fps_cuda<float>(const float*, const int64_t*, const int64_t*, int64_t, int64_t, int64_t, float*,
                                     float*, int64_t*, int64_t*, cudaStream_t);
template cudaError_t fps_cuda<double>(const double*, const int64_t*, const int64_t*, int64_t, int64_t, int64_t,
                                      double*, double*, int64_t*, int64_t*, cudaStream_t);

}  // namespace ad3d
