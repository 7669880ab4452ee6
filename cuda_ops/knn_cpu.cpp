// Exact k-nearest-neighbour search on the CPU: a KD-tree over the reference cloud, queries answered
// in parallel (OpenMP), each with a sorted top-k array and nearest-child-first descent. Queries are
// visited in the order of a KD-tree over the queries, so neighbouring queries run back to back and
// share cache lines of the reference tree.
#include <algorithm>
#include <limits>
#include <vector>

#include "kdtree.h"
#include "knn_grid.h"
#include "ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ad3d {
namespace {

template <typename T>
struct TopK {
  int k, size = 0;
  T* d;
  int64_t* i;
  T worst() const { return size < k ? std::numeric_limits<T>::infinity() : d[k - 1]; }
  void push(T dist, int64_t index) {  // keep ascending; caller checked dist < worst()
    if (size < k) ++size;
    topk_insert(d, i, size, dist, index);
  }
};

template <typename T>
void search(const KdTree<T>& tree, const T* q, TopK<T>& top) {
  int32_t stack[128];
  int sp = 0;
  stack[sp++] = 0;
  while (sp > 0) {
    const auto& nd = tree.nodes[stack[--sp]];
    if (tree.lower_bound(nd, q) >= top.worst()) continue;
    if (nd.left < 0) {
      for (int64_t j = nd.begin; j < nd.end; ++j) {
        const T d = sq_dist(&tree.xyz[3 * j], q);
        if (d < top.worst()) top.push(d, tree.perm[j]);
      }
      continue;
    }
    const T dl = tree.lower_bound(tree.nodes[nd.left], q), dr = tree.lower_bound(tree.nodes[nd.right], q);
    // push the farther child first so the nearer one is searched first
    if (dl <= dr) {
      stack[sp++] = nd.right;
      stack[sp++] = nd.left;
    } else {
      stack[sp++] = nd.left;
      stack[sp++] = nd.right;
    }
  }
}

}  // namespace

template <typename T>
void knn_cpu(const T* query, int64_t m, const T* ref, int64_t n, int k, bool sorted, int threads, T* dist2,
             int64_t* idx) {
  (void)sorted;  // the top-k array is always ascending: sorting costs nothing extra
  const KdTree<T> tree(ref, n, 16);
  const KdTree<T> order(query, m, 64);  // only its permutation is used: a spatially coherent order
#pragma omp parallel for schedule(dynamic, 256) num_threads(threads)
  for (int64_t t = 0; t < m; ++t) {
    const int64_t qi = order.perm[t];
    TopK<T> top{k, 0, dist2 + qi * k, idx + qi * k};
    search(tree, query + 3 * qi, top);
  }
}

template void knn_cpu<float>(const float*, int64_t, const float*, int64_t, int, bool, int, float*, int64_t*);
template void knn_cpu<double>(const double*, int64_t, const double*, int64_t, int, bool, int, double*, int64_t*);

}  // namespace ad3d
