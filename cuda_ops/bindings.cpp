// Torch bindings: validate tensors, pick the CPU or CUDA kernel, loop over the batch.
// Inputs arrive already checked by ad3d/ops (shapes, lengths, NaN); here only device and dtype matter.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>

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

// Reference clouds at least this large use the grid search on the GPU instead of brute force.
constexpr int64_t kGridMinPoints = 1 << 15;
constexpr double kPointsPerCell = 4.0;

// A uniform grid over one cloud: points sorted by cell, cell offsets, and the geometry.
struct Grid {
  torch::Tensor points, order, cell_start;
  int64_t dims[3];
  double origin[3], cell;

  template <typename T>
  ad3d::GridView<T> view() const {
    ad3d::GridView<T> g{points.data_ptr<T>(), order.data_ptr<int64_t>(), cell_start.data_ptr<int64_t>(),
                        {dims[0], dims[1], dims[2]}, {}, static_cast<T>(cell)};
    for (int a = 0; a < 3; ++a) g.origin[a] = static_cast<T>(origin[a]);
    return g;
  }
};

// About kPointsPerCell points per cell over the bounding box; flat or thin clouds get larger cells
// so that the number of cells stays proportional to the number of points.
Grid build_grid(const torch::Tensor& ref) {
  const int64_t n = ref.size(0);
  const auto lo = std::get<0>(ref.min(0)).to(torch::kCPU, torch::kDouble);
  const auto hi = std::get<0>(ref.max(0)).to(torch::kCPU, torch::kDouble);
  Grid g;
  double ext[3], largest = 0;
  for (int a = 0; a < 3; ++a) {
    g.origin[a] = lo[a].item<double>();
    ext[a] = hi[a].item<double>() - g.origin[a];
    largest = std::max(largest, ext[a]);
  }
  const double target = std::max(1.0, n / kPointsPerCell);
  g.cell = largest > 0 ? std::cbrt(std::max(ext[0] * ext[1] * ext[2], 1e-30) / target) : 1.0;
  g.cell = std::max(g.cell, largest * 1e-6 + 1e-30);
  auto total = [&] {
    double cells = 1;
    for (int a = 0; a < 3; ++a) cells *= std::floor(ext[a] / g.cell) + 1;
    return cells;
  };
  while (total() > 2 * target + 8) g.cell *= 1.25;
  for (int a = 0; a < 3; ++a) g.dims[a] = static_cast<int64_t>(std::floor(ext[a] / g.cell)) + 1;
  auto origin = torch::tensor({g.origin[0], g.origin[1], g.origin[2]}, ref.options());
  auto dims = torch::tensor({g.dims[0], g.dims[1], g.dims[2]}, ref.options().dtype(torch::kInt64));
  auto coord = torch::floor((ref - origin) / g.cell).to(torch::kInt64);
  coord = torch::minimum(torch::maximum(coord, torch::zeros_like(coord)), dims - 1);
  const auto flat = (coord.select(1, 2) * g.dims[1] + coord.select(1, 1)) * g.dims[0] + coord.select(1, 0);
  g.order = std::get<1>(flat.sort(std::optional<bool>(true), /*dim=*/0, /*descending=*/false));
  g.points = ref.index_select(0, g.order).contiguous();
  const int64_t cells = g.dims[0] * g.dims[1] * g.dims[2];
  g.cell_start = torch::cat({torch::zeros({1}, flat.options()), torch::bincount(flat, {}, cells).cumsum(0)});
  return g;
}

// The grid search on the CPU: the code the CUDA kernel runs, exposed so tests can check it here.
std::vector<torch::Tensor> knn_grid_cpu(torch::Tensor query, torch::Tensor ref, int64_t k) {
  const int64_t m = query.size(0);
  auto dist2 = torch::full({m, k}, std::numeric_limits<double>::infinity(), query.options());
  auto idx = torch::full({m, k}, -1, query.options().dtype(torch::kInt64));
  const Grid grid = build_grid(ref);
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "ad3d_knn_grid_cpu", [&] {
    const auto view = grid.view<scalar_t>();
    const scalar_t* q = query.data_ptr<scalar_t>();
    scalar_t* d = dist2.data_ptr<scalar_t>();
    int64_t* i = idx.data_ptr<int64_t>();
    at::parallel_for(0, m, 256, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) ad3d::grid_search(view, q + 3 * t, static_cast<int>(k), d + t * k, i + t * k);
    });
  });
  return {dist2, idx};
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
    const int64_t parts = 2 * b * ad3d::fps_cuda_parts(b, n);
    auto part_val = torch::empty({parts}, points.options());
    auto part_idx = torch::empty({parts}, points.options().dtype(torch::kInt64));
    AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "ad3d_fps_cuda", [&] {
      auto err = ad3d::fps_cuda<scalar_t>(points.data_ptr<scalar_t>(), lengths.data_ptr<int64_t>(),
                                          starts.data_ptr<int64_t>(), b, n, k, work.data_ptr<scalar_t>(),
                                          part_val.data_ptr<scalar_t>(), part_idx.data_ptr<int64_t>(),
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
    if (n >= kGridMinPoints) {  // one grid per cloud, searched by one thread per query
      const auto ql_cpu = q_lengths.to(torch::kCPU), rl_cpu = r_lengths.to(torch::kCPU);
      for (int64_t i = 0; i < b; ++i) {
        const int64_t mi = ql_cpu[i].item<int64_t>(), ni = rl_cpu[i].item<int64_t>();
        const Grid grid = build_grid(ref[i].narrow(0, 0, ni).contiguous());
        AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "ad3d_knn_grid_cuda", [&] {
          auto err = ad3d::knn_grid_cuda<scalar_t>(grid.view<scalar_t>(), query[i].data_ptr<scalar_t>(), mi,
                                                   static_cast<int>(k), dist2[i].data_ptr<scalar_t>(),
                                                   idx[i].data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream());
          TORCH_CHECK(err == cudaSuccess, "ad3d knn grid kernel failed: ", cudaGetErrorString(err));
        });
      }
      return {dist2, idx};
    }
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
  m.def("knn_grid_cpu", &knn_grid_cpu, "the GPU's grid kNN search, run on the CPU (for tests)");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
}
