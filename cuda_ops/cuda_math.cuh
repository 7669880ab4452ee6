// Squared distance with explicit round-to-nearest intrinsics: no FMA contraction, so the GPU gives
// bit-identical distances to the CPU kernels and the naive reference ((dx² + dy²) + dz²).
#pragma once
#include <cstdint>

namespace ad3d {

__device__ __forceinline__ float rn_sq_dist(float ax, float ay, float az, float bx, float by, float bz) {
  const float dx = __fsub_rn(ax, bx), dy = __fsub_rn(ay, by), dz = __fsub_rn(az, bz);
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

__device__ __forceinline__ double rn_sq_dist(double ax, double ay, double az, double bx, double by, double bz) {
  const double dx = __dsub_rn(ax, bx), dy = __dsub_rn(ay, by), dz = __dsub_rn(az, bz);
  return __dadd_rn(__dadd_rn(__dmul_rn(dx, dx), __dmul_rn(dy, dy)), __dmul_rn(dz, dz));
}

}  // namespace ad3d
