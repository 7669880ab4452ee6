// Uniform-grid k-nearest-neighbour search, written once for host and device: the CUDA kernel runs it
// per query thread, and the extension exposes the same code on the CPU so tests can check it against
// brute force on a machine without a GPU. Cells are visited in rings of growing Chebyshev radius
// around the query's cell; the search stops when no unvisited cell can hold a closer point.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define AD3D_HD __host__ __device__
#include "cuda_math.cuh"
#else
#define AD3D_HD
#endif

namespace ad3d {

// Reference points sorted by cell; cell c holds sorted points [cell_start[c], cell_start[c + 1]).
template <typename T>
struct GridView {
  const T* points;            // (n, 3) in cell order
  const int64_t* order;       // cell order -> original index
  const int64_t* cell_start;  // (cells + 1)
  int64_t dims[3];
  T origin[3];
  T cell;
};

template <typename T>
AD3D_HD inline T grid_sq_dist(T ax, T ay, T az, T bx, T by, T bz) {
#ifdef __CUDA_ARCH__
  return rn_sq_dist(ax, ay, az, bx, by, bz);
#else
  const T dx = ax - bx, dy = ay - by, dz = az - bz;
  return (dx * dx + dy * dy) + dz * dz;
#endif
}

// Insert (d, i) into the ascending top-k arrays; the caller checked d < d_k[k - 1].
template <typename T>
AD3D_HD inline void topk_insert(T* best_d, int64_t* best_i, int k, T d, int64_t i) {
  int pos = k - 1;
  while (pos > 0 && best_d[pos - 1] > d) {
    best_d[pos] = best_d[pos - 1];
    best_i[pos] = best_i[pos - 1];
    --pos;
  }
  best_d[pos] = d;
  best_i[pos] = i;
}

template <typename T>
AD3D_HD inline int64_t cell_coord(const GridView<T>& g, T v, int a) {
  int64_t c = static_cast<int64_t>((v - g.origin[a]) / g.cell);
  return c < 0 ? 0 : (c >= g.dims[a] ? g.dims[a] - 1 : c);
}

// Cell boxes are widened by this fraction of a cell so that a point put in a neighbouring cell by
// rounding still lies inside its cell's box: the bounds below stay lower bounds.
template <typename T>
AD3D_HD inline T cell_margin(const GridView<T>& g) {
  return g.cell * T(1e-3);
}

// Squared distance from q to cell (cx, cy, cz): a lower bound for every point inside it.
template <typename T>
AD3D_HD inline T cell_lower_bound(const GridView<T>& g, const T* q, const int64_t* c) {
  T sum = T(0);
  for (int a = 0; a < 3; ++a) {
    const T lo = g.origin[a] + static_cast<T>(c[a]) * g.cell - cell_margin(g);
    const T hi = g.origin[a] + static_cast<T>(c[a] + 1) * g.cell + cell_margin(g);
    const T gap = q[a] < lo ? lo - q[a] : (q[a] > hi ? q[a] - hi : T(0));
    sum += gap * gap;
  }
  return sum;
}

// best_d / best_i: k slots, pre-filled with +inf / -1; filled ascending on return.
template <typename T>
AD3D_HD void grid_search(const GridView<T>& g, const T* q, int k, T* best_d, int64_t* best_i) {
  const int64_t home[3] = {cell_coord(g, q[0], 0), cell_coord(g, q[1], 1), cell_coord(g, q[2], 2)};
  int64_t max_r = 0;
  for (int a = 0; a < 3; ++a) {
    const int64_t reach = home[a] > g.dims[a] - 1 - home[a] ? home[a] : g.dims[a] - 1 - home[a];
    max_r = reach > max_r ? reach : max_r;
  }
  for (int64_t r = 0; r <= max_r; ++r) {
    // Every unvisited point lies outside the cube of cells within radius r - 1, beyond one of its
    // faces; faces at or past the grid's edge have no points beyond them. Stop once the k-th best
    // is no farther than the nearest remaining face (or when no face remains).
    if (r > 0) {
      bool open = false;
      T reach = T(0);
      for (int a = 0; a < 3; ++a) {
        if (home[a] - r + 1 > 0) {
          const T m = q[a] - (g.origin[a] + static_cast<T>(home[a] - r + 1) * g.cell) - cell_margin(g);
          reach = (!open || m < reach) ? m : reach;
          open = true;
        }
        if (home[a] + r < g.dims[a]) {
          const T m = (g.origin[a] + static_cast<T>(home[a] + r) * g.cell) - q[a] - cell_margin(g);
          reach = (!open || m < reach) ? m : reach;
          open = true;
        }
      }
      if (!open) return;
      if (reach > T(0) && reach * reach >= best_d[k - 1]) return;
    }
    // cells of ring r (Chebyshev distance exactly r), each axis clipped to the grid
    int64_t from[3], to[3];
    for (int a = 0; a < 3; ++a) {
      from[a] = home[a] - r < 0 ? -home[a] : -r;
      to[a] = home[a] + r > g.dims[a] - 1 ? g.dims[a] - 1 - home[a] : r;
    }
    for (int64_t dz = from[2]; dz <= to[2]; ++dz)
      for (int64_t dy = from[1]; dy <= to[1]; ++dy) {
        const bool face = dz == -r || dz == r || dy == -r || dy == r;
        for (int64_t dx = from[0]; dx <= to[0]; ++dx) {
          if (!face && dx != -r && dx != r) {  // inside the shell: jump to its far side
            if (dx < r) dx = r - 1;
            continue;
          }
          const int64_t c[3] = {home[0] + dx, home[1] + dy, home[2] + dz};
          if (cell_lower_bound(g, q, c) >= best_d[k - 1]) continue;
          const int64_t id = (c[2] * g.dims[1] + c[1]) * g.dims[0] + c[0];
          for (int64_t j = g.cell_start[id]; j < g.cell_start[id + 1]; ++j) {
            const T* p = g.points + 3 * j;
            const T d = grid_sq_dist(q[0], q[1], q[2], p[0], p[1], p[2]);
            if (d < best_d[k - 1]) topk_insert(best_d, best_i, k, d, g.order[j]);
          }
        }
      }
  }
}

}  // namespace ad3d
