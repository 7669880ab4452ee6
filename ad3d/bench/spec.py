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

        _require(isinstance(self.name, str) and self.name, f"a detector name is {self.name!r}, not a name")
        _require(self.preset is None or isinstance(self.preset, str), f"{self.name}: preset {self.preset!r}")
        _require(isinstance(self.params, dict), f"{self.name}: params is {self.params!r}, not a table of values")
        _require(isinstance(self.label, str), f"{self.name}: label {self.label!r} is not text")
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

        _require(isinstance(self.root, str) and self.root, f"a dataset root is {self.root!r}, not a folder path")
        _require(isinstance(self.format, str), f"'{self.root}': format {self.format!r} is not a format name")
        _require(
            self.categories is None
            or (isinstance(self.categories, list) and all(isinstance(c, str) for c in self.categories)),
            f"'{self.root}': categories must be a list of names (categories = [\"box0\"]), got {self.categories!r}",
        )
        _require(self.preprocess in ("none", "plane"), f"'{self.root}': preprocess {self.preprocess!r} (none | plane)")
        found = datasets.categories(self.format, self.root)
        if not found:
            raise ConfigError(f"sweep: no {self.format} categories found in '{self.root}'")
        missing = sorted(set(self.categories or []) - set(found))
        if missing:
            raise ConfigError(
                f"sweep: '{self.root}' has no categor{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}"
            )
        return list(self.categories or found)

    def fingerprint(self, category: str) -> str:
        """What a category's jobs read, as a hash of the path, size and modification time of every file under
        the root in a folder named after the category (every file when no folder is): a regenerated or
        changed dataset is new data, and its jobs run again."""
        import hashlib

        root = Path(self.root)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        own = [p for p in files if category in p.relative_to(root).parts[:-1]] or files
        h = hashlib.sha256()
        for path in own:
            stat = path.stat()
            h.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]


@dataclass
class Sweep:
    detectors: list[Variant]
    datasets: list[DataSource]
    seeds: list[int] = field(default_factory=lambda: [0])
    cpus: int = 1
    fpr: float = 0.01

    def check(self) -> None:
        """Every value of the sweep itself of the right type and range (a ConfigError naming it), before any job."""
        _require(
            isinstance(self.detectors, list) and isinstance(self.datasets, list), "detectors and datasets are lists"
        )
        _require(self.detectors and self.datasets, "give at least one detector and one dataset")
        seeds = self.seeds
        _require(
            isinstance(seeds, list) and seeds and all(type(v) is int and v >= 0 for v in seeds),
            f"seeds must be a list of whole numbers >= 0 (seeds = [0, 1, 2]), got {seeds!r}",
        )
        _require(len(set(seeds)) == len(seeds), f"seeds {seeds} name a seed twice; each seed runs once")
        _require(type(self.cpus) is int and self.cpus >= 1, f"cpus must be a whole number >= 1, got {self.cpus!r}")
        fpr_ok = isinstance(self.fpr, (int, float)) and not isinstance(self.fpr, bool) and 0 < self.fpr < 1
        _require(fpr_ok, f"fpr must be a rate between 0 and 1, got {self.fpr!r}")

    def variants(self) -> list[tuple[Variant, dict]]:
        """Each detector entry with its resolved parameters, after checking the sweep's values, the entries'
        names, presets and parameter names (no dataset is read)."""
        self.check()
        titles = [v.title for v in self.detectors]
        if len(set(titles)) != len(titles):
            raise ConfigError(f"sweep: two detector entries share a name ({', '.join(titles)}); give each a label")
        return [(v, v.resolved_params()) for v in self.detectors]

    def jobs(self) -> list[Job]:
        """Every (detector, category, seed) job, in a fixed order: dataset, category, seed, detector. Every value
        and every dataset is checked first: a sweep with a mistake runs nothing."""
        variants = self.variants()
        jobs = []
        for source in self.datasets:
            for category in source.resolved_categories():
                fingerprint = source.fingerprint(category)
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
                                data_fingerprint=fingerprint,
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
    """A Sweep from a TOML file; a clear ConfigError for a missing file, bad TOML or text, an unknown key or a
    table where a list of tables belongs (the values themselves: `Sweep.check`)."""
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"sweep file '{path}' is a folder") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"sweep file '{path}' is not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cannot read sweep file '{path}': {e}") from None
    tables = {k: doc.get(k, []) for k in ("detectors", "datasets")}
    for key, value in tables.items():
        if not (isinstance(value, list) and all(isinstance(t, dict) for t in value)):
            raise ConfigError(f"sweep file '{path}': {key} must be a list of tables ([[{key}]] entries)")
    try:
        return Sweep(
            detectors=[Variant(**d) for d in tables["detectors"]],
            datasets=[DataSource(**d) for d in tables["datasets"]],
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


def _require(ok, what: str) -> None:
    if not ok:
        raise ConfigError(f"sweep: {what}")
