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

constexpr int kLeafSize = 64;

template <typename T>
struct FpsState {
  const KdTree<T>& tree;
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
      for (int64_t i = nd.begin; i < nd.end; ++i) {
        const T d = sq_dist(&tree.xyz[3 * i], s);
        if (d < dist[i]) {
          dist[i] = d;
          changed = true;
        }
      }
      if (!changed) return;
      T best_d = T(-1);
      int64_t best_i = std::numeric_limits<int64_t>::max();
      for (int64_t i = nd.begin; i < nd.end; ++i) {
        if (better(dist[i], tree.perm[i], best_d, best_i)) {
          best_d = dist[i];
          best_i = tree.perm[i];
        }
      }
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
  FpsState<T> st{tree, std::vector<T>(n, std::numeric_limits<T>::infinity()),
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
