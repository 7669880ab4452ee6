// A compact KD-tree over 3-D points, shared by the CPU FPS and kNN kernels.
// Points are copied in tree order (leaves contiguous) and every node keeps its exact bounding box,
// so a lower bound on the squared distance from any query to a node is cheap and never exceeds the
// distance the kernels compute for a point inside it (same operation order, no FMA contraction).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace ad3d {

template <typename T>
inline T sq_dist(const T* a, const T* b) {
  const T dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return (dx * dx + dy * dy) + dz * dz;
}

template <typename T>
struct KdTree {
  struct Node {
    T lo[3], hi[3];
    int64_t begin, end;  // range in tree order
    int32_t left, right;  // children, -1 for a leaf
  };
  std::vector<Node> nodes;
  std::vector<int64_t> perm;  // tree order -> original index
  std::vector<T> xyz;         // coordinates in tree order, 3 per point

  KdTree(const T* points, int64_t n, int leaf_size) {
    std::vector<Item> items(n);
    T lo[3], hi[3];
    for (int a = 0; a < 3; ++a) lo[a] = hi[a] = n > 0 ? points[a] : T(0);
    for (int64_t i = 0; i < n; ++i) {
      for (int a = 0; a < 3; ++a) {
        const T v = points[3 * i + a];
        items[i].p[a] = v;
        lo[a] = std::min(lo[a], v);
        hi[a] = std::max(hi[a], v);
      }
      items[i].index = i;
    }
    nodes.reserve(4 * (n / std::max(1, leaf_size)) + 2);
    if (n > 0) build_root(items, n, lo, hi, leaf_size);
    perm.resize(n);
    xyz.resize(3 * n);
    for (int64_t i = 0; i < n; ++i) {
      perm[i] = items[i].index;
      for (int a = 0; a < 3; ++a) xyz[3 * i + a] = items[i].p[a];
    }
    tighten_boxes();
  }

  // Squared distance from q to the node's box: a lower bound for every point inside it.
  T lower_bound(const Node& nd, const T* q) const {
    T g[3];
    for (int a = 0; a < 3; ++a) {
      const T below = nd.lo[a] - q[a], above = q[a] - nd.hi[a];
      g[a] = below > T(0) ? below : (above > T(0) ? above : T(0));
    }
    return (g[0] * g[0] + g[1] * g[1]) + g[2] * g[2];
  }

 private:
  struct Item {
    T p[3];
    int64_t index;
  };

  // Split [begin, end) on the widest side of a loose box (the parent's box cut at the split value):
  // at the midpoint in one partition pass, or at the median when one side would be empty.
  static int64_t choose_split(std::vector<Item>& items, int64_t begin, int64_t end, const T* lo, const T* hi,
                              int* axis_out, T* cut_out) {
    int axis = 0;
    for (int a = 1; a < 3; ++a)
      if (hi[a] - lo[a] > hi[axis] - lo[axis]) axis = a;
    T cut = lo[axis] + (hi[axis] - lo[axis]) / T(2);
    auto first_right = std::partition(items.begin() + begin, items.begin() + end,
                                      [axis, cut](const Item& x) { return x.p[axis] < cut; });
    int64_t mid = first_right - items.begin();
    if (mid == begin || mid == end) {
      mid = begin + (end - begin) / 2;
      std::nth_element(items.begin() + begin, items.begin() + mid, items.begin() + end,
                       [axis](const Item& x, const Item& y) { return x.p[axis] < y.p[axis]; });
      cut = items[mid].p[axis];
    }
    *axis_out = axis;
    *cut_out = cut;
    return mid;
  }

  // Nodes are numbered in pre-order, so children always come after their parent.
  static int32_t split(std::vector<Node>& out, std::vector<Item>& items, int64_t begin, int64_t end, const T* lo,
                       const T* hi, int leaf_size) {
    const int32_t id = static_cast<int32_t>(out.size());
    out.push_back(Node{{}, {}, begin, end, -1, -1});
    if (end - begin <= leaf_size) return id;
    int axis;
    T cut;
    const int64_t mid = choose_split(items, begin, end, lo, hi, &axis, &cut);
    T left_hi[3] = {hi[0], hi[1], hi[2]}, right_lo[3] = {lo[0], lo[1], lo[2]};
    left_hi[axis] = right_lo[axis] = cut;
    const int32_t left = split(out, items, begin, mid, lo, left_hi, leaf_size);
    const int32_t right = split(out, items, mid, end, right_lo, hi, leaf_size);
    out[id].left = left;
    out[id].right = right;
    return id;
  }

  // Large trees: split the root, then build its two subtrees on two threads and join the node lists.
  void build_root(std::vector<Item>& items, int64_t n, const T* lo, const T* hi, int leaf_size) {
    if (n < (int64_t{1} << 15)) {
      split(nodes, items, 0, n, lo, hi, leaf_size);
      return;
    }
    int axis;
    T cut;
    const int64_t mid = choose_split(items, 0, n, lo, hi, &axis, &cut);
    T left_hi[3] = {hi[0], hi[1], hi[2]}, right_lo[3] = {lo[0], lo[1], lo[2]};
    left_hi[axis] = right_lo[axis] = cut;
    std::vector<Node> sub[2];
#pragma omp parallel for num_threads(2) schedule(static, 1) if (n >= (int64_t{1} << 15))
    for (int side = 0; side < 2; ++side) {
      if (side == 0)
        split(sub[0], items, 0, mid, lo, left_hi, leaf_size);
      else
        split(sub[1], items, mid, n, right_lo, hi, leaf_size);
    }
    const int32_t off_left = 1, off_right = 1 + static_cast<int32_t>(sub[0].size());
    nodes.push_back(Node{{}, {}, 0, n, off_left, off_right});
    for (int side = 0; side < 2; ++side)
      for (Node nd : sub[side]) {
        const int32_t off = side == 0 ? off_left : off_right;
        if (nd.left >= 0) {
          nd.left += off;
          nd.right += off;
        }
        nodes.push_back(nd);
      }
  }

  // Exact boxes, bottom-up: a leaf's from its points, an inner node's as the union of its children.
  void tighten_boxes() {
    for (int64_t id = static_cast<int64_t>(nodes.size()) - 1; id >= 0; --id) {
      Node& nd = nodes[id];
      if (nd.left < 0) {
        for (int a = 0; a < 3; ++a) nd.lo[a] = nd.hi[a] = xyz[3 * nd.begin + a];
        for (int64_t i = nd.begin + 1; i < nd.end; ++i)
          for (int a = 0; a < 3; ++a) {
            nd.lo[a] = std::min(nd.lo[a], xyz[3 * i + a]);
            nd.hi[a] = std::max(nd.hi[a], xyz[3 * i + a]);
          }
      } else {
        const Node &l = nodes[nd.left], &r = nodes[nd.right];
        for (int a = 0; a < 3; ++a) {
          nd.lo[a] = std::min(l.lo[a], r.lo[a]);
          nd.hi[a] = std::max(l.hi[a], r.hi[a]);
        }
      }
    }
  }
};

}  // namespace ad3d
