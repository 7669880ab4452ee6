"""Six prismatic machined parts for a development set (DEV7 in docs/detectors/simple3d.md), built by constructive
solid geometry and written as STL: sharp edges, bores, a keyway, a boss, a T-slot and a rib, the features that
a set of YCB objects and the shipped CAD parts covers thinly. Sizes in millimetres.

    pip install manifold3d        # for this script only; not an ad3d dependency
    python benchmarks/machined_parts.py runs/devsrc7
    ad3d synth runs/devsrc7 --out runs/DEV7 --format anomaly-shapenet --points 12500 --good 6 --per-defect 2 --seed 41
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def parts() -> dict:
    """name -> manifold3d.Manifold."""
    from manifold3d import Manifold

    def box(x, y, z, at=(0, 0, 0)):
        return Manifold.cube([x, y, z]).translate(list(at))

    def cylinder(radius, height, at=(0, 0, 0), segments=64, along="z"):
        solid = Manifold.cylinder(height, radius, radius, segments)
        solid = solid.rotate([0, 90, 0]) if along == "x" else solid
        return solid.translate(list(at))

    ribbed_plate = box(80, 50, 4) + box(80, 3, 16, (0, 23.5, 4))
    for x, y in ((15, 10), (65, 10), (15, 40), (65, 40)):
        ribbed_plate = ribbed_plate - cylinder(3, 10, (x, y, -2))
    return {
        "l_bracket": box(60, 40, 8)
        + box(8, 40, 50)
        + box(20, 4, 20, (8, 18, 8))
        - cylinder(4, 20, (35, 12, -5))
        - cylinder(4, 20, (35, 28, -5))
        - cylinder(5, 30, (-5, 20, 35), along="x"),
        "boss_block": box(50, 40, 20) + cylinder(4, 6, (12, 12, 20)) - box(14, 10, 8, (28, 20, 14)),
        "tslot": box(60, 40, 30) - box(60, 10, 12, (0, 15, 18)) - box(60, 22, 6, (0, 9, 12)),
        "stepped_shaft": cylinder(12, 20)
        + cylinder(8, 25, (0, 0, 20))
        + cylinder(5, 15, (0, 0, 45))
        - box(3, 12, 14, (-1.5, 2, 28)),
        "ribbed_plate": ribbed_plate,
        "hex_flange": cylinder(20, 6, segments=6) + cylinder(12, 10, (0, 0, 6)) - cylinder(6, 40, (0, 0, -5)),
    }


def main() -> None:
    import trimesh

    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, solid in parts().items():
        mesh = solid.to_mesh()
        part = trimesh.Trimesh(np.asarray(mesh.vert_properties)[:, :3], np.asarray(mesh.tri_verts))
        if not part.is_watertight:
            sys.exit(f"{name}: the solid is not watertight")
        part.export(out / f"{name}.STL")
        print(f"{out / name}.STL: {len(part.faces)} faces, extents {np.round(part.extents, 1)} mm")


if __name__ == "__main__":
    main()
