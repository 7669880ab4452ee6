// Exact farthest-point sampling on the CPU with KD-tree pruning (the idea of QuickFPS / bucket FPS).
// Each node caches the largest running distance of its points; a step skips every node whose box
// lies at least that far from the new sample, since none of its points can get closer. Skipping
// changes no value, so the index sequence equals the naive algorithm's.
#include <limits>
#include <vector>

#include "kdtree.h"
#include "ops.h"

namespace ad3d {
namespace {

constexpr int kLeafSize = 128;

template <typename T>
struct FpsState {
  const KdTree<T>& tree;
  const T *x, *y, *z;             // coordinates in tree order, one array per axis
  std::vector<T> dist;        // running min distance, tree order
  std::vector<T> node_max;    // largest dist in each node
  std::vector<int64_t> node_arg;  // original index of that point (lowest index on ties)

  // Better candidate: larger distance, or equal distance and lower original index.
  static bool better(T d, int64_t i, T best_d, int64_t best_i) {
    return d > best_d || (d == best_d && i < best_i);
  }

  void update(int32_t id, const T* s) {
    const auto& nd = tree.nodes[id];
    if (tree.lower_bound(nd, s) >= node_max[id]) return;  // nothing in here can shrink
    if (nd.left < 0) {
      bool changed = false;
      for (int64_t i = nd.begin; i < nd.end; ++i) {  // structure-of-arrays: vectorises
        const T dx = x[i] - s[0], dy = y[i] - s[1], dz = z[i] - s[2];
        const T d = (dx * dx + dy * dy) + dz * dz;
        changed |= d < dist[i];
        dist[i] = d < dist[i] ? d : dist[i];
      }
      if (!changed) return;
      T best_d = dist[nd.begin];
      for (int64_t i = nd.begin + 1; i < nd.end; ++i) best_d = dist[i] > best_d ? dist[i] : best_d;
      int64_t best_i = std::numeric_limits<int64_t>::max();
      for (int64_t i = nd.begin; i < nd.end; ++i)
        if (dist[i] == best_d && tree.perm[i] < best_i) best_i = tree.perm[i];
      node_max[id] = best_d;
      node_arg[id] = best_i;
      return;
    }
    update(nd.left, s);
    update(nd.right, s);
    const bool left_wins = better(node_max[nd.left], node_arg[nd.left], node_max[nd.right], node_arg[nd.right]);
    const int32_t win = left_wins ? nd.left : nd.right;
    node_max[id] = node_max[win];
    node_arg[id] = node_arg[win];
  }
};

}  // namespace

template <typename T>
void fps_cpu(const T* points, int64_t n, int64_t k, int64_t start, int64_t* out) {
  const KdTree<T> tree(points, n, kLeafSize);
  std::vector<T> soa(3 * n);
  for (int64_t i = 0; i < n; ++i)
    for (int a = 0; a < 3; ++a) soa[a * n + i] = tree.xyz[3 * i + a];
  FpsState<T> st{tree, soa.data(), soa.data() + n, soa.data() + 2 * n, std::vector<T>(n, std::numeric_limits<T>::infinity()),
                 std::vector<T>(tree.nodes.size(), std::numeric_limits<T>::infinity()),
                 std::vector<int64_t>(tree.nodes.size(), 0)};
  int64_t current = start;
  for (int64_t step = 0; step < k; ++step) {
    out[step] = current;
    st.update(0, points + 3 * current);
    current = st.node_arg[0];
  }
}

template void fps_cpu<float>(const float*, int64_t, int64_t, int64_t, int64_t*);
template void fps_cpu<double>(const double*, int64_t, int64_t, int64_t, int64_t*);

}  // namespace ad3d
