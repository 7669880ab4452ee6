"""A stand-in for numpy's Generator that hands out draws a release made, so that ad3d's function given
the same draws can be compared with the release's output."""

from __future__ import annotations

import numpy as np


class ScriptedDraws:
    """integers / uniform / normal / choice return the next scripted value of that kind."""

    def __init__(self, **queues):
        self.queues = {kind: list(values) for kind, values in queues.items()}

    def _next(self, kind: str):
        return self.queues[kind].pop(0)

    def integers(self, *args, **kwargs):
        return int(self._next("integers"))

    def uniform(self, low=0.0, high=1.0, size=None):
        value = self._next("uniform")
        return np.asarray(value, dtype=np.float64) if size is not None else float(value)

    def normal(self, *args, size=None, **kwargs):
        return np.asarray(self._next("normal"), dtype=np.float64)

    def choice(self, options, *args, **kwargs):
        return self._next("choice")

    def spent(self) -> bool:
        return not any(self.queues.values())
