// Torch bindings: validate tensors, pick the CPU or CUDA kernel, loop over the batch.
// Inputs arrive already checked by ad3d/ops (shapes, lengths, NaN); here only device and dtype matter.
#include <torch/extension.h>

#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef AD3D_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace {

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <typename T>
void fps_cpu_batch(const T* p, const int64_t* len, const int64_t* st, int64_t b, int64_t n, int64_t k, int64_t* o) {
#pragma omp parallel for schedule(dynamic, 1) if (b > 1)
  for (int64_t i = 0; i < b; ++i) ad3d::fps_cpu<T>(p + i * n * 3, len[i], k, st[i], o + i * k);
}

// points (B, N, 3), lengths (B,) int64 on CPU, starts (B,) int64 -> idx (B, k) int64
torch::Tensor fps(torch::Tensor points, torch::Tensor lengths, torch::Tensor starts, int64_t k) {
  const int64_t b = points.size(0), n = points.size(1);
  auto out = torch::full({b, k}, -1, points.options().dtype(torch::kInt64));
  if (points.is_cuda()) {
#ifdef AD3D_WITH_CUDA
    auto work = torch::empty({b, n}, points.options());
    AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ad3d_fps_cuda", [&] {
      auto err = ad3d::fps_cuda<scalar_t>(points.data_ptr<scalar_t>(), lengths.data_ptr<int64_t>(),
                                          starts.data_ptr<int64_t>(), b, n, k, work.data_ptr<scalar_t>(),
                                          out.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream());
      TORCH_CHECK(err == cudaSuccess, "ad3d fps kernel failed: ", cudaGetErrorString(err));
    });
    return out;
#else
    TORCH_CHECK(false, "ad3d ops were built without CUDA");
#endif
  }
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ad3d_fps_cpu", [&] {
    fps_cpu_batch<scalar_t>(points.data_ptr<scalar_t>(), len, st, b, n, k, out.data_ptr<int64_t>());
  });
  return out;
}

// query (B, M, 3), ref (B, N, 3), lengths int64 -> (dist2 (B, M, k), idx (B, M, k) int64)
std::vector<torch::Tensor> knn(torch::Tensor query, torch::Tensor ref, torch::Tensor q_lengths,
                               torch::Tensor r_lengths, int64_t k, bool sorted) {
  const int64_t b = query.size(0), m = query.size(1), n = ref.size(1);
  auto dist2 = torch::full({b, m, k}, std::numeric_limits<double>::infinity(), query.options());
  auto idx = torch::full({b, m, k}, -1, query.options().dtype(torch::kInt64));
  if (query.is_cuda()) {
#ifdef AD3D_WITH_CUDA
    AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "ad3d_knn_cuda", [&] {
      auto err = ad3d::knn_cuda<scalar_t>(query.data_ptr<scalar_t>(), q_lengths.data_ptr<int64_t>(), m,
                                          ref.data_ptr<scalar_t>(), r_lengths.data_ptr<int64_t>(), n, b,
                                          static_cast<int>(k), dist2.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                                          at::cuda::getCurrentCUDAStream());
      TORCH_CHECK(err == cudaSuccess, "ad3d knn kernel failed: ", cudaGetErrorString(err));
    });
    return {dist2, idx};
#else
    TORCH_CHECK(false, "ad3d ops were built without CUDA");
#endif
  }
  const int64_t* ql = q_lengths.data_ptr<int64_t>();
  const int64_t* rl = r_lengths.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "ad3d_knn_cpu", [&] {
    for (int64_t i = 0; i < b; ++i)
      ad3d::knn_cpu<scalar_t>(query.data_ptr<scalar_t>() + i * m * 3, ql[i], ref.data_ptr<scalar_t>() + i * n * 3,
                              rl[i], static_cast<int>(k), sorted, max_threads(),
                              dist2.data_ptr<scalar_t>() + i * m * k, idx.data_ptr<int64_t>() + i * m * k);
  });
  return {dist2, idx};
}

bool with_cuda() {
#ifdef AD3D_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fps", &fps, "exact farthest-point sampling (batched, padded)");
  m.def("knn", &knn, "exact k nearest neighbours (batched, padded)");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
}
