"""Detector names and where each lives ('module:Class'), imported on first use: listing the detectors
or reading a model header imports nothing heavy (no torch)."""

from __future__ import annotations

import importlib
import inspect

from ad3d.errors import ConfigError

BUILTIN = {
    "patchcore": "ad3d.detectors.patchcore:PatchCore",
    "r3dad": "ad3d.detectors.r3dad:R3DAD",
    "mc4ad": "ad3d.detectors.mc4ad:MC4AD",
    "musc": "ad3d.detectors.musc:MuSc",
    "lsfa": "ad3d.detectors.lsfa:LSFA",
    "simple3d": "ad3d.detectors.simple3d:Simple3D",
    "deviation": "ad3d.detectors.deviation:Deviation",
}
_REGISTERED: dict[str, type] = {}


def register(cls):
    """Class decorator: make a detector available to create() and load() under `cls.name`."""
    _REGISTERED[cls.name] = cls
    return cls


def available() -> list[str]:
    """Every detector name, without importing any detector."""
    return sorted(set(BUILTIN) | set(_REGISTERED))


def detector_class(name: str) -> type:
    """The class registered under `name`, imported now if it is a built-in."""
    if name not in _REGISTERED and name in BUILTIN:
        module, cls = BUILTIN[name].split(":")
        _REGISTERED[name] = getattr(importlib.import_module(module), cls)
    if name not in _REGISTERED:
        raise ConfigError(f"unknown detector {name!r}; available: {', '.join(available())}")
    return _REGISTERED[name]


def param_names(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def check_param_names(cls: type, params: dict) -> None:
    """A ConfigError naming the valid parameters for any name the detector does not take."""
    unknown = sorted(set(params) - set(param_names(cls)))
    if unknown:
        raise ConfigError(
            f"{cls.name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(param_names(cls))}"
        )


def create(name: str, **params):
    """A new, unfitted detector by registry name."""
    cls = detector_class(name)
    check_param_names(cls, params)
    return cls(**params)


def preset(name: str, preset_name: str | None) -> dict:
    """A detector's named parameter set (e.g. 'cpu', 'paper'); explicit parameters override it. None: {}."""
    if preset_name is None:
        return {}
    presets = getattr(detector_class(name), "PRESETS", {"default": {}})
    if preset_name not in presets:
        raise ConfigError(f"{name} has no preset {preset_name!r}; presets: {', '.join(presets)}")
    return dict(presets[preset_name])


def parse_params(pairs: list[str] | None) -> dict:
    """`key=value` strings (`--param`, the benchmark scripts) to parameters; values parsed as int, float, bool,
    a tuple of them when comma-separated (layer widths: `encoder_widths=64,128`), or kept as text."""

    def parse(value: str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                continue
        return {"true": True, "false": False, "none": None}.get(value.lower(), value)

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--param takes key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = tuple(parse(v) for v in value.split(",")) if "," in value else parse(value)
    return out
