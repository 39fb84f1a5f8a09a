"""Configuration loading: strict pydantic models validated from YAML, and their hash.

Every model rejects unknown keys, is frozen once built, and hashes to a stable digest that the
dataset metadata records (so a dataset says exactly which recipe made it). The recipe models
live in :mod:`harvest.recipes`, provider profiles in :mod:`harvest.backends.profiles`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harvest.errors import ConfigError


class StrictModel(BaseModel):
    """Base model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}' (remove it or check its spelling)"
    # A validator's own message is the explanation: pydantic's "Value error, " adds nothing.
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def load_model(model: type[M], path: Path) -> M:
    """Load and validate one YAML file into ``model``.

    Raises:
        ConfigError: the file is missing, is not YAML, or does not validate; the message names
            the file and the first offending key.
    """
    return parse_model(model, _read_text(path), str(path))


def _read_text(path: Path) -> str:
    """A config file's text; a missing file or a folder is a one-line ConfigError."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a folder: give a YAML file") from None


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """YAML ``text`` as a mapping; ``source`` names it in errors.

    Raises:
        ConfigError: the text is not YAML, or not a mapping.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{source} is not valid YAML{at}: fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of keys to values")
    return data


def _validate(model: type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def parse_model(model: type[M], text: str, source: str) -> M:
    """Validate YAML ``text`` into ``model``; ``source`` names it in errors (a path, a name).

    Raises:
        ConfigError: the text is not YAML or does not validate (first offending key named).
    """
    return _validate(model, _yaml_mapping(text, source), source)


def config_hash(model: BaseModel) -> str:
    """A stable SHA-256 digest (hex, 16 chars) of a model's content, independent of key order."""
    payload: Any = model.model_dump(mode="json")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- build configs (`harvest build CONFIG`) ----------------------------------------------------

# Keys that say how to compute, not what to compute: they do not enter the dataset's config hash,
# so `--set workers=4` on a resumed build is the same dataset.
COMPUTE_KEYS = ("workers", "scheduler")
# Products of the sen2naip recipe: the real pairs, and HR degraded into S2-like LR.
PRODUCTS = ("cross-sensor", "synthetic", "sen2venus", "sentinel-hr")
# Products made over whole sites (region: a polygon layer of sites), each with its own recipe.
SITE_PRODUCTS = {"sen2venus": "sen2venus", "sentinel-hr": "sentinel-hr"}
# `region: demo-world` is the demo world's sites (its region.geojson).
DEMO_WORLD_REGION = "demo-world"
# `prune.model: demo` loads seeded random weights of the CLIP architecture (no download).
DEMO_CLIP_MODEL = "demo"


class CatalogConfig(StrictModel):
    """Where scenes come from (``catalog:``; a plain string is the ``source``).

    Attributes:
        source: A provider profile (``planetary-computer``, ``earth-search``, ``earth-engine``,
            ``demo``), a STAC API URL, or a stac-geoparquet file or folder.
        profile: Provider profile (vocabulary) of a URL or a local snapshot.
        world: Demo world folder for ``source: demo``: built there when missing (default: inside
            the output folder, ``OUTPUT/.harvest/demo-world``).
        timeout_s: Seconds to wait for one answer of a remote catalog.
        ee_project: Earth Engine project (``earth-engine`` only).
    """

    source: str
    profile: str | None = None
    world: Path | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    ee_project: str | None = None


class QaConfig(StrictModel):
    """QA limits (``qa:``), as ``harvest fetch``'s options."""

    max_shift_px: float = Field(default=1.0, ge=0)
    max_sam_deg: float = Field(default=2.0, ge=0)
    max_cloud_pct: float = Field(default=0.0, ge=0, le=100)
    max_nodata_pct: float = Field(default=0.0, ge=0, le=100)
    shift_method: Literal["phase", "sift"] = "phase"
    correct_shift: bool = False


class DegradationConfig(StrictModel):
    """How the synthetic product is made (``degradation:``), as ``harvest degrade``.

    Attributes:
        model: ``sen2naip`` (the published models) or a folder from ``harvest degradation fit``.
        methods: Harmonization methods, one LR per method and HR image.
    """

    model: str = "sen2naip"
    methods: tuple[Literal["statistical", "deterministic", "variational"], ...] = (
        "statistical",
        "deterministic",
        "variational",
    )


class SyntheticConfig(StrictModel):
    """The synthetic set's HR images (``synthetic:``; SEN2NAIP's synthetic subset).

    Attributes:
        chip_px: HR image side in pixels at the recipe's HR pixel size (the paper: 1,100 at
            2.5 m); it must nest on the LR grid (a multiple of 4 for SEN2NAIP).
        blank_window_px: Side of the zero-variance window of the blank filter (the paper: 19).
        images: Also write ``HR_<method>.tif`` and ``LR_<method>.tif`` per image (as ``harvest
            degrade``); the paper published the HR and the histograms only.
    """

    chip_px: int = Field(default=1100, ge=8)
    blank_window_px: int = Field(default=19, ge=2)
    images: bool = False


class Sen2venusConfig(StrictModel):
    """The SEN2VENuS patches (``sen2venus:``; :mod:`harvest.stages._sen2venus`).

    Attributes:
        max_patches: patches kept at most per pair, at random (the paper: 500).
        sift_upsample: upsampling of the 10 m blue bands before SIFT (1: as the paper; 2 finds
            more keypoints on small sites).
    """

    max_patches: int = Field(default=500, ge=1)
    sift_upsample: int = Field(default=1, ge=1, le=4)


class SentinelHrConfig(StrictModel):
    """The Sentinel-HR series (``sentinel_hr:``; :mod:`harvest.stages._sentinel_hr`).

    Attributes:
        guide_revisit_days: least gap between kept guide dates (default: the recipe's series).
        ratio: LR pixel size of the targets over 5 m: 5 (25 m, Sentinel-HR + S2) or 2.5
            (12.5 m, Sentinel-HR + S2-NG) (default: the recipe's series).
        sift_upsample: upsampling of the 10 m blue bands before SIFT.
    """

    guide_revisit_days: float | None = Field(default=None, gt=0)
    ratio: float | None = Field(default=None, gt=1, le=20)
    sift_upsample: int = Field(default=1, ge=1, le=4)


class PruneConfig(StrictModel):
    """Diversity pruning (``prune:``), as ``harvest prune``; ``prune: null`` keeps every image.

    Attributes:
        clusters: k of k-means (one image kept per cluster); must not exceed the images.
        strategy: ``random`` (the paper) or ``nearest`` to the centroid.
        model: open_clip architecture, model-config JSON, ``hf-hub:ORG/REPO``, or ``demo``
            (seeded random weights of a small CLIP: runs offline, no semantics).
        pretrained: open_clip pretrained tag (found in the local Hugging Face cache).
        checkpoint: Local state dict for ``model`` (instead of ``pretrained``).
        product: Which images to prune: ``synthetic`` (the early and late HR images of the
            synthetic set, before it is degraded) when the build makes it, else
            ``cross-sensor``.
        precision: The embedding path: ``auto`` (the fastest that matches fp32 on this
            machine) or one by name (``fp32``, ``bf16``, ``int8``...).
    """

    clusters: int = Field(ge=1)
    strategy: Literal["random", "nearest"] = "random"
    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    checkpoint: Path | None = None
    product: Literal["cross-sensor", "synthetic"] | None = None
    precision: str = "auto"


class BuildConfig(StrictModel):
    """One dataset build: ``harvest build CONFIG.yaml`` (see ``configs/builds/``).

    Relative paths are relative to the folder ``harvest build`` runs in.

    Attributes:
        recipe: ``sen2naip``, ``sen2venus``, ``sen12`` or a recipe YAML path.
        catalog: Where scenes come from (:class:`CatalogConfig`, or its source as a string).
        region: ``conus``, ``world-land``, ``demo-world`` (the demo world's sites) or a polygon
            file; ignored when ``rois`` is given.
        n: How many ROIs to sample.
        rois: An existing ROI table to use instead of sampling.
        min_distance_km: Hard-core spacing of the sampled ROIs.
        start: First acquisition day (default: the recipe's).
        end: Last acquisition day (default: the recipe's, else today).
        output: The dataset folder.
        products: What to write (sen2naip: ``cross-sensor`` and/or ``synthetic``; sen2venus:
            ``sen2venus``, the published patch layout over the sites of ``region``;
            sentinel-hr: ``sentinel-hr``, guide and target time stacks per site).
        qa: QA limits.
        degradation: How ``synthetic`` is made.
        synthetic: The synthetic set's HR images.
        sen2venus: The SEN2VENuS patches.
        sentinel_hr: The Sentinel-HR series.
        prune: Diversity pruning, or null.
        seed: Seed of sampling, splits, degradation and pruning.
        workers: Local Dask worker processes for fetch (1: no Dask).
        scheduler: Address of an existing Dask scheduler (instead of ``workers``).
    """

    recipe: str
    catalog: CatalogConfig
    region: str = "conus"
    n: int | None = Field(default=None, ge=1)
    rois: Path | None = None
    min_distance_km: float = Field(default=5.0, gt=0)
    start: date | None = None
    end: date | None = None
    output: Path
    products: tuple[Literal["cross-sensor", "synthetic", "sen2venus", "sentinel-hr"], ...] = (
        "cross-sensor",
    )
    qa: QaConfig = QaConfig()
    degradation: DegradationConfig = DegradationConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    sen2venus: Sen2venusConfig = Sen2venusConfig()
    sentinel_hr: SentinelHrConfig = SentinelHrConfig()
    prune: PruneConfig | None = None
    seed: int = 0
    workers: int = Field(default=1, ge=1)
    scheduler: str | None = None

    @field_validator("catalog", mode="before")
    @classmethod
    def _catalog_shorthand(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> BuildConfig:
        site = self.site_product()
        if site is not None:
            recipe = SITE_PRODUCTS[site]
            if self.products != (site,) or self.recipe != recipe:
                raise ValueError(
                    f"products: {site} is a product of its own, made with recipe {recipe}"
                )
            if self.n is not None or self.rois is not None:
                raise ValueError(
                    f"products: {site} covers the whole sites of region; remove n and rois"
                )
        elif self.n is None and self.rois is None:
            raise ValueError("give n (ROIs to sample) or rois (an existing ROI table)")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if not self.products:
            raise ValueError("products is empty: list cross-sensor and/or synthetic")
        if len(set(self.products)) != len(self.products):
            raise ValueError("products lists an entry twice")
        if "synthetic" in self.products and self.recipe != "sen2naip":
            raise ValueError("products: synthetic is made from NAIP chips: use recipe sen2naip")
        if self.region == DEMO_WORLD_REGION and self.catalog.source != "demo":
            raise ValueError("region demo-world needs catalog demo")
        return self

    def site_product(self) -> str | None:
        """The product made over whole sites (``sen2venus``, ``sentinel-hr``), if any."""
        return next((p for p in self.products if p in SITE_PRODUCTS), None)

    def prune_product(self) -> str:
        """The product whose images are pruned."""
        if self.prune is not None and self.prune.product is not None:
            return self.prune.product
        return "synthetic" if "synthetic" in self.products else "cross-sensor"

    def dataset_hash(self) -> str:
        """Hash of what the dataset is made of (the compute keys left out)."""
        exclude = set(COMPUTE_KEYS)
        if "synthetic" not in self.products:
            exclude.add("synthetic")  # unused; and the hashes of earlier folders stay the same
        if "sen2venus" not in self.products:
            exclude.add("sen2venus")
        if "sentinel-hr" not in self.products:
            exclude.add("sentinel_hr")
        payload: Any = self.model_dump(mode="json", exclude=exclude)
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_set(items: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Parse ``--set key=value`` overrides: dotted keys, values read as YAML scalars.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: list[tuple[list[str], Any]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(
                f"--set {item!r}: write KEY=VALUE (dotted keys for nested values, e.g. "
                "--set prune.clusters=500)"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML: the text itself (validation says if it does not fit)
        out.append(([p.strip() for p in parts], value))
    return out


def _apply_set(data: dict[str, Any], keys: list[str], value: Any, item: str) -> None:
    node = data
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = {}
            node[k] = child
        elif isinstance(child, str) and k == "catalog":
            child = {"source": child}
            node[k] = child
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(f"--set {item}: {where} is not a mapping, so {item} cannot be set")
        node = child
    node[keys[-1]] = value


def load_build_config(path: Path, overrides: Sequence[str] = ()) -> BuildConfig:
    """Load a build config, apply ``--set`` overrides, validate, and check the files it names.

    Raises:
        ConfigError: missing or invalid file, unknown key, wrong type, bad override, or a file
            the config names that does not exist (one line naming the key or path).
    """
    data = _yaml_mapping(_read_text(path), str(path))
    for (keys, value), item in zip(parse_set(overrides), overrides, strict=True):
        _apply_set(data, keys, value, item)
    config = _validate(BuildConfig, data, str(path))
    _check_files(config, path)
    return _absolute(config)


def _absolute(config: BuildConfig) -> BuildConfig:
    """The config with every relative path made absolute (from the folder harvest runs in).

    The resolved ``config.yaml`` a build writes then means the same from anywhere, which
    ``harvest extend`` (run by a scheduler from another folder) relies on.
    """
    from harvest.regions import BUNDLED_REGIONS

    def absolute(p: str | Path) -> str:
        return str(Path(p).expanduser().resolve())

    data = config.model_dump(mode="json")
    data["output"] = absolute(config.output)
    if config.rois is not None:
        data["rois"] = absolute(config.rois)
    if config.region not in (*BUNDLED_REGIONS, DEMO_WORLD_REGION):
        data["region"] = absolute(config.region)
    if config.recipe.endswith((".yaml", ".yml")):
        data["recipe"] = absolute(config.recipe)
    source = config.catalog.source
    from harvest.backends.profiles import known_profiles

    local = not source.startswith(("http://", "https://")) and source not in known_profiles()
    if local and Path(source).expanduser().exists():
        data["catalog"]["source"] = absolute(source)
    if config.catalog.world is not None:
        data["catalog"]["world"] = absolute(config.catalog.world)
    if config.degradation.model != "sen2naip":
        data["degradation"]["model"] = absolute(config.degradation.model)
    if config.prune is not None and config.prune.checkpoint is not None:
        data["prune"]["checkpoint"] = absolute(config.prune.checkpoint)
    return BuildConfig.model_validate(data)


def _check_files(config: BuildConfig, source: Path) -> None:
    """Files the config names must exist before anything is written."""
    from harvest.regions import BUNDLED_REGIONS

    checks: list[tuple[str, Path | None]] = [("rois", config.rois)]
    if config.rois is None and config.region not in (*BUNDLED_REGIONS, DEMO_WORLD_REGION):
        checks.append(("region", Path(config.region)))
    if config.recipe.endswith((".yaml", ".yml")):
        checks.append(("recipe", Path(config.recipe)))
    if config.prune is not None:
        checks.append(("prune.checkpoint", config.prune.checkpoint))
    for key, p in checks:
        if p is not None and not p.expanduser().exists():
            raise ConfigError(
                f"{source}: {key} names {p}, which does not exist: fix the path (relative "
                "paths are relative to the folder harvest runs in)"
            )
