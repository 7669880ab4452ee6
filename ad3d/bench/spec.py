"""A sweep: detector variants x datasets (with categories) x seeds, from a TOML file or from flags.

seeds = [0, 1, 2]
cpus = 1                      # threads per job (and the CPUs a job asks of Ray)

[[detectors]]
name = "mc4ad"
preset = "cpu"                # optional
label = "mc4ad (short)"       # optional; the name in tables
params = { iterations = 1500 }

[[datasets]]
root = "data/R2"
format = "anomaly-shapenet"
categories = ["banana0"]      # optional: every category
preprocess = "none"           # optional: "plane" on MVTec 3D-AD
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ad3d.bench.job import Job
from ad3d.errors import ConfigError


@dataclass
class Variant:
    """One detector configuration of the sweep."""

    name: str
    preset: str | None = None
    params: dict = field(default_factory=dict)
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or (f"{self.name}:{self.preset}" if self.preset else self.name)

    def resolved_params(self) -> dict:
        from ad3d.detectors import preset
        from ad3d.detectors.registry import detector_class, param_names

        params = {**(preset(self.name, self.preset) if self.preset else {}), **self.params}
        unknown = sorted(set(params) - set(param_names(detector_class(self.name))))
        if unknown:
            raise ConfigError(f"sweep: {self.name} has no parameter {', '.join(unknown)}")
        return params


@dataclass
class DataSource:
    root: str
    format: str
    categories: list[str] | None = None
    preprocess: str = "none"

    def resolved_categories(self) -> list[str]:
        from ad3d import datasets

        found = datasets.categories(self.format, self.root)
        if not found:
            raise ConfigError(f"sweep: no {self.format} categories found in '{self.root}'")
        missing = sorted(set(self.categories or []) - set(found))
        if missing:
            raise ConfigError(
                f"sweep: '{self.root}' has no categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}"
            )
        return list(self.categories or found)


@dataclass
class Sweep:
    detectors: list[Variant]
    datasets: list[DataSource]
    seeds: list[int] = field(default_factory=lambda: [0])
    cpus: int = 1
    fpr: float = 0.01

    def jobs(self) -> list[Job]:
        """Every (detector, category, seed) job, in a fixed order: dataset, category, seed, detector."""
        if not self.detectors or not self.datasets:
            raise ConfigError("sweep: give at least one detector and one dataset")
        titles = [v.title for v in self.detectors]
        if len(set(titles)) != len(titles):
            raise ConfigError(f"sweep: two detector entries share a name ({', '.join(titles)}); give each a label")
        variants = [(v, v.resolved_params()) for v in self.detectors]
        jobs = []
        for source in self.datasets:
            for category in source.resolved_categories():
                for seed in self.seeds:
                    for variant, params in variants:
                        jobs.append(
                            Job(
                                variant.name,
                                source.root,
                                source.format,
                                category,
                                seed=seed,
                                params=params,
                                label=variant.title,
                                preprocess=source.preprocess,
                                fpr=self.fpr,
                                cpus=self.cpus,
                            )
                        )
        keys = [j.key for j in jobs]
        if len(set(keys)) != len(keys):
            raise ConfigError("sweep: two detector entries are the same configuration; drop one")
        return jobs

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def load_spec(path: str | Path) -> Sweep:
    """A Sweep from a TOML file; a clear ConfigError for a missing file, bad TOML or an unknown key."""
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cannot read sweep file '{path}': {e}") from None
    try:
        return Sweep(
            detectors=[Variant(**d) for d in doc.get("detectors", [])],
            datasets=[DataSource(**d) for d in doc.get("datasets", [])],
            **{k: v for k, v in doc.items() if k not in ("detectors", "datasets")},
        )
    except TypeError as e:
        raise ConfigError(f"sweep file '{path}': {e}") from None


def parse_detector(text: str) -> Variant:
    """`name` or `name:preset` from the command line."""
    name, _, preset = text.partition(":")
    return Variant(name=name, preset=preset or None)


def sweep_from(
    spec: str | Path | None = None,
    *,
    detectors: list[str] | None = None,
    data: str | None = None,
    format: str | None = None,
    categories: str | None = None,
    preprocess: str = "none",
    seeds: str | None = None,
) -> Sweep:
    """The sweep `ad3d bench run` was asked for: a TOML file, or one dataset and detectors given as
    `name[:preset]`; seeds ("0,1,2") override the file's."""
    if spec:
        sweep = load_spec(spec)
    elif detectors and data and format:
        cats = categories.split(",") if categories else None
        sweep = Sweep([parse_detector(d) for d in detectors], [DataSource(data, format, cats, preprocess)])
    else:
        raise ConfigError("bench run needs --spec FILE, or --detector, --data and --format")
    if seeds:
        try:
            sweep.seeds = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--seeds takes whole numbers separated by commas, got {seeds!r}") from None
    return sweep
