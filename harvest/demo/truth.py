"""The demo world's ground truth: typed, frozen models and the ``truth.json`` reader.

Every number the simulator used to render a scene is recorded here, rounded to the precision it
was used with (parameters are drawn, rounded, and only then used), so later stages can compare
their estimates with the exact values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harvest.errors import DemoWorldError

TRUTH_SCHEMA_VERSION = 2


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BoundsM(_Frozen):
    """An axis-aligned box in the site's UTM CRS, metres."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float


class SiteTruth(_Frozen):
    """One place of the world: a square of land on a real UTM grid."""

    site_id: str
    name: str
    country: str
    state: str | None = Field(description="US state code (lower case) for CONUS sites.")
    conus: bool
    lon: float
    lat: float
    utm_epsg: int
    mgrs_tile: str
    size_m: float
    bounds: BoundsM = Field(description="Site footprint (every scene of the site covers it).")
    chip_safe_bounds: BoundsM = Field(
        description="Where an ROI centre may fall so that a 1210 m chip lies inside the site."
    )
    landscape_seed: int
    material_fractions: dict[str, float]


class TransferTruth(_Frozen):
    """Radiometric transfer from the HR source to the LR reflectance of one band.

    ``gamma``: ``rho = (dn / dn_max) ** (1 / gamma)`` applied to the HR source (NAIP) after area
    averaging to the HR grid; ``identity``: the HR source already is reflectance; ``linear``:
    ``rho_out = gain * rho + offset``.
    """

    kind: Literal["gamma", "identity", "linear"]
    gamma: float | None = None
    gain: float | None = None
    offset: float | None = None
    source_band: str = Field(description="Band of the HR source this band is rendered from.")


class BandTruth(_Frozen):
    """Degradation parameters of one band of one LR scene."""

    band: str
    gsd_m: float
    psf_sigma_hr_px: float = Field(description="Gaussian PSF std in HR (2.5 m) pixels.")
    transfer: TransferTruth
    noise_std: float = Field(description="Additive Gaussian noise std, reflectance units.")


class CloudTruth(_Frozen):
    """Clouds, shadows and nodata of a scene, as fractions of the site footprint."""

    cloud_fraction: float
    shadow_fraction: float
    nodata_fraction: float
    clear_fraction: float
    cloud_boxes: list[BoundsM] = Field(
        description="Bounding boxes (scene CRS) of connected cloud + shadow regions."
    )
    nodata_edge: tuple[float, float, float] | None = Field(
        default=None,
        description="Swath edge: pixels with a*x + b*y > c (scene CRS metres) are nodata.",
    )
    centre_clear: bool = Field(
        description="The 60 m square at the site centre (inside every chip of the site) is "
        "free of cloud, shadow and nodata."
    )


class S2SceneTruth(_Frozen):
    """A Sentinel-2 L2A-like scene and how it was rendered."""

    kind: Literal["sentinel-2-l2a"] = "sentinel-2-l2a"
    item_id: str
    collection: str
    site_id: str
    datetime: str
    platform: str
    processing_baseline: str
    dn_offset: int = Field(description="DN = round(rho * 10000) + dn_offset; 0 is nodata.")
    hr_source: str = Field(description="NAIP item id, or 'landscape' (reflectance at 2.5 m).")
    hr_gsd_m: float
    shift_m: tuple[float, float] = Field(
        description="(dx east, dy north): image content is displaced by this many metres."
    )
    bands: list[BandTruth]
    clouds: CloudTruth
    clean: bool = Field(description="No cloud, shadow or nodata anywhere on the site.")


class NaipSceneTruth(_Frozen):
    """A NAIP-like scene: DN = clip(round(255 * rho_1m ** gamma + n), 1, 255)."""

    kind: Literal["naip"] = "naip"
    item_id: str
    collection: str
    site_id: str
    datetime: str
    gsd_m: float
    bands: list[str]
    gamma: dict[str, float] = Field(description="Per band exponent of rho -> DN / 255.")
    dn_noise_std: float = Field(description="Sensor noise added before rounding, in DN.")
    blank_boxes: list[BoundsM] = Field(
        description="Constant-fill (zero variance) patches written into the stored image."
    )
    blank_value: int | None = None


class VenusSceneTruth(_Frozen):
    """A VENuS L2A-like scene (int16 reflectance x 1000)."""

    kind: Literal["venus-l2a"] = "venus-l2a"
    item_id: str
    collection: str
    site_id: str
    datetime: str
    hr_gsd_m: float
    shift_m: tuple[float, float]
    bands: list[BandTruth]
    clouds: CloudTruth
    clean: bool


class S1SceneTruth(_Frozen):
    """A Sentinel-1 GRD-like scene: sigma0 in dB with multiplicative Gamma speckle."""

    kind: Literal["sentinel-1-grd"] = "sentinel-1-grd"
    item_id: str
    collection: str
    site_id: str
    datetime: str
    gsd_m: float
    orbit_state: str
    enl: float = Field(description="Equivalent number of looks of the Gamma speckle.")
    moisture_offset_db: float
    sigma0_db: dict[str, dict[str, float]] = Field(
        description="Mean sigma0 (dB) per polarisation and material before speckle."
    )


SceneTruth = Annotated[
    S2SceneTruth | NaipSceneTruth | VenusSceneTruth | S1SceneTruth, Field(discriminator="kind")
]


class PairTruth(_Frozen):
    """An acquisition pair the search stage must find.

    For ``sen12`` the "lr" side is the Sentinel-1 scene and the "hr" side the Sentinel-2 scene.
    """

    recipe: Literal["sen2naip", "sen2venus", "sen12"]
    site_id: str
    lr_item_id: str
    lr_collection: str
    hr_item_id: str
    hr_collection: str
    dt_hours: float = Field(description="LR datetime minus HR datetime, hours.")
    s2_cloud_cover: float = Field(description="eo:cloud_cover of the Sentinel-2 scene.")
    clean: bool = Field(
        description="A chip anywhere on the site passes cloud/nodata/blank/shift QA."
    )
    issues: list[str] = Field(
        description="Why chips of this pair fail QA, as the manifest's reason codes: cloud, "
        "nodata, blank, shift (S2 misregistered by more than 1 LR px)."
    )


class WorldTruth(_Frozen):
    """Everything the demo world knows about itself."""

    schema_version: int
    harvest_version: str
    seed: int
    site_size_m: float
    conventions: dict[str, str]
    pair_rules: dict[str, str]
    sites: list[SiteTruth]
    scenes: list[SceneTruth]
    pairs: list[PairTruth]

    def scene(self, item_id: str) -> S2SceneTruth | NaipSceneTruth | VenusSceneTruth | S1SceneTruth:
        """Return the scene with this item id.

        Raises:
            KeyError: when no scene has that id.
        """
        for s in self.scenes:
            if s.item_id == item_id:
                return s
        raise KeyError(item_id)

    def site(self, site_id: str) -> SiteTruth:
        """Return the site with this id.

        Raises:
            KeyError: when no site has that id.
        """
        for s in self.sites:
            if s.site_id == site_id:
                return s
        raise KeyError(site_id)

    def pairs_for(self, recipe: str) -> list[PairTruth]:
        """Return the expected pairs of one recipe."""
        return [p for p in self.pairs if p.recipe == recipe]


def dump_truth(truth: WorldTruth) -> str:
    """Serialise the truth deterministically (sorted keys, 2-space indent)."""
    return json.dumps(truth.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def load_truth(path: str | Path) -> WorldTruth:
    """Read ``truth.json`` (or the world folder that holds it).

    Raises:
        DemoWorldError: when the file is missing or does not match the schema.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DemoWorldError(
            f"no demo world truth at {p}: build one with 'harvest demo world DIR'"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DemoWorldError(f"{p} is not valid JSON ({exc}); rebuild with --force") from exc
    try:
        return WorldTruth.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DemoWorldError(
            f"{p} does not match the demo world truth schema at "
            f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}; rebuild with --force"
        ) from exc
