"""The recipe model: sensors by role, their band groups, pairing rules, QA checks and writer.

A recipe describes itself completely: fetch reads every band group of every sensor on its
nested grid, QA applies the listed checks with the band correspondence given here, and the
writer named here lays the chips out. Every model rejects unknown keys and is frozen once
built; :func:`harvest.config.config_hash` of a recipe is recorded in every dataset it makes.

Nesting rule: pixel sizes are whole millimetres and every band group of every sensor covers
the same square footprint, exactly (``chip_px * gsd_m`` equal in whole millimetres). Any
rational ratio between two groups' pixel sizes nests then (2, 2.5, 4, 5, 6, ...): with the
ratio ``p / q`` in lowest terms, ``q`` coarse pixels hold exactly ``p`` fine ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from harvest.config import StrictModel

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
"""Group names name files (``lr_10m.tif``): lower-case letters, digits, ``_`` and ``-``."""


class Role(StrEnum):
    """What a sensor is in a recipe: the low-resolution input, the reference, or a guide."""

    LR = "lr"
    HR = "hr"
    GUIDE = "guide"


class SensorKind(StrEnum):
    """Optical sensors are checked as reflectance, SAR sensors as backscatter in dB."""

    OPTICAL = "optical"
    SAR = "sar"


class Check(StrEnum):
    """The QA checks a recipe may apply (in the order their reasons are listed).

    ``nodata``, ``blank``: every group. ``cloud``: the sensor with a ``cloud_mask`` band
    (Sentinel-2 SCL). ``shift``, ``spectral``: between corresponding LR and HR bands only.
    ``saturated``, ``reflectance_range``: optical groups. ``backscatter_range``: SAR groups.
    """

    NODATA = "nodata"
    CLOUD = "cloud"
    BLANK = "blank"
    SHIFT = "shift"
    SPECTRAL = "spectral"
    SATURATED = "saturated"
    REFLECTANCE_RANGE = "reflectance_range"
    BACKSCATTER_RANGE = "backscatter_range"


class Layout(StrEnum):
    """How a recipe's chips are written (one writer per layout in :mod:`harvest.writers`)."""

    SEN2NAIP_CROSS_SENSOR = "sen2naip-cross-sensor"
    """``cross-sensor/ROI/{LR,HR,SCL}.tif`` + metadata.json, as SEN2NAIP publishes it."""
    GENERIC = "generic"
    """``kept/ROI/{role}_{group}.tif`` per band group + metadata.json with every QA decision."""


def _millimetres(gsd_m: float) -> int:
    return round(gsd_m * 1000)


class BandGroup(StrictModel):
    """Bands of one sensor read together on one chip grid (e.g. Sentinel-2's 10 m bands)."""

    name: str = Field(pattern=_NAME_PATTERN, description="Names the group's file and metadata.")
    bands: tuple[str, ...] = Field(min_length=1)
    gsd_m: float = Field(gt=0, description="Pixel size of the chip grid, whole millimetres.")
    chip_px: int = Field(gt=0, description="Chip side in pixels.")

    @field_validator("bands")
    @classmethod
    def _bands_once(cls, bands: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({b for b in bands if bands.count(b) > 1})
        if repeated:
            raise ValueError(f"band {repeated[0]} is listed twice: list each band once")
        return bands

    @field_validator("gsd_m")
    @classmethod
    def _whole_millimetres(cls, gsd_m: float) -> float:
        if abs(gsd_m * 1000 - _millimetres(gsd_m)) > 1e-6:
            raise ValueError(f"{gsd_m} m is not a whole number of millimetres: round it")
        return gsd_m

    @property
    def chip_side_m(self) -> float:
        """Chip side length in metres."""
        return self.gsd_m * self.chip_px

    @property
    def chip_side_mm(self) -> int:
        """Chip side length in whole millimetres (exact)."""
        return _millimetres(self.gsd_m) * self.chip_px


class Sensor(StrictModel):
    """One sensor of a recipe: its collection, kind, how it is read and its band groups.

    The first group is the sensor's primary group: search sizes ROIs with it and QA registers
    LR against HR on the two primary groups. ``bands``, ``gsd_m``, ``chip_px`` and
    ``chip_side_m`` are the primary group's.
    """

    collection: str = Field(description="Canonical collection name, mapped by provider profiles.")
    kind: SensorKind = SensorKind.OPTICAL
    resampling: Literal["nearest", "average"] = Field(
        default="average",
        description="nearest: bands read on their own pixel grid; average: area-averaged.",
    )
    cloud_mask: str | None = Field(
        default=None,
        description="Band with Sentinel-2 scene classes (SCL), read on the primary group's "
        "grid when the scene has it; optical sensors only.",
    )
    groups: tuple[BandGroup, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Sensor:
        names = [g.name for g in self.groups]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"group name '{repeated[0]}' is used twice: name each group once")
        if self.cloud_mask is not None and self.kind is SensorKind.SAR:
            raise ValueError("a SAR sensor has no cloud mask: remove cloud_mask")
        if self.cloud_mask is not None and "scl" in names:
            raise ValueError("group name 'scl' is the cloud mask's file name: rename the group")
        return self

    @property
    def primary(self) -> BandGroup:
        """The first band group."""
        return self.groups[0]

    @property
    def bands(self) -> tuple[str, ...]:
        """The primary group's bands."""
        return self.primary.bands

    @property
    def gsd_m(self) -> float:
        """The primary group's pixel size."""
        return self.primary.gsd_m

    @property
    def chip_px(self) -> int:
        """The primary group's chip side in pixels."""
        return self.primary.chip_px

    @property
    def chip_side_m(self) -> float:
        """Chip side length in metres (the same for every group)."""
        return self.primary.chip_side_m

    def band_group(self, band: str) -> BandGroup | None:
        """The group holding ``band``, or None."""
        return next((g for g in self.groups if band in g.bands), None)


class PairingSpec(StrictModel):
    """When two acquisitions make a pair."""

    max_dt_days: float = Field(ge=0, description="Largest |t_lr - t_hr| in days.")
    same_day: bool = Field(default=False, description="Require the same UTC calendar day.")
    same_season: bool = Field(
        default=False, description="Require both dates in the same meteorological season."
    )


class SeriesSpec(StrictModel):
    """A time-series recipe's series (Sentinel-HR): how guides are thinned, how LR is made.

    Targets are HR dates (not guides) with an LR scene less than ``pairing.max_dt_days`` away;
    their LR is resampled to ``hr.gsd_m * target_ratio`` metres.
    """

    guide_revisit_days: float = Field(
        gt=0, description="Least gap between kept guide dates (the guide series' revisit)."
    )
    target_ratio: float = Field(
        gt=1, le=20, description="LR pixel size of the targets over the HR's (5: 25 m over 5 m)."
    )


class QaSpec(StrictModel):
    """Which checks QA applies, and which LR band corresponds to which HR band.

    Shift and spectral angle are computed between corresponding bands only (an LR band may
    correspond to one HR band; two LR bands may share one, as Sentinel-2 B08 and B8A share
    VENuS B11). Without a correspondence (SAR against optical) neither is computed.
    """

    checks: tuple[Check, ...] = Field(min_length=1)
    correspondence: dict[str, str] = Field(default_factory=dict, description="LR band -> HR band.")

    @field_validator("checks")
    @classmethod
    def _checks_once(cls, checks: tuple[Check, ...]) -> tuple[Check, ...]:
        repeated = sorted({c.value for c in checks if checks.count(c) > 1})
        if repeated:
            raise ValueError(f"check {repeated[0]} is listed twice: list each check once")
        return checks


class Recipe(StrictModel):
    """A dataset recipe: the sensors paired, their band groups, filters, QA and layout."""

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = ""
    lr: Sensor
    hr: Sensor
    guide: Sensor | None = Field(
        default=None,
        description="A guide series (Sentinel-HR, with series); chip stages do not fetch it.",
    )
    series: SeriesSpec | None = Field(
        default=None, description="Guide thinning and target LR of a time-series recipe."
    )
    pairing: PairingSpec
    max_scene_cloud_pct: float = Field(ge=0, le=100)
    hr_min_year: int | None = None
    start: date | None = None
    end: date | None = None
    qa: QaSpec
    writer: Layout

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        side = self.lr.primary
        for role, sensor in self.sensors():
            for g in sensor.groups:
                if g.chip_side_mm != side.chip_side_mm:
                    raise ValueError(
                        f"chip of {role} group {g.name} is {g.chip_side_m:g} m wide but the LR "
                        f"chip is {side.chip_side_m:g} m: set chip_px so that chip_px * gsd_m "
                        "is the same for every group"
                    )
        self._check_qa()
        masked = [role.value for role, s in self.sensors() if s.cloud_mask]
        if len(masked) > 1:
            raise ValueError(
                f"sensors {' and '.join(masked)} both have a cloud_mask: QA reads one, keep one"
            )
        if self.writer is Layout.SEN2NAIP_CROSS_SENSOR and (
            len(self.lr.groups) > 1 or len(self.hr.groups) > 1 or self.hr.cloud_mask
        ):
            raise ValueError(
                "the sen2naip-cross-sensor layout holds one LR and one HR group and the LR's "
                "SCL: use writer generic for more groups"
            )
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if (self.series is None) != (self.guide is None):
            raise ValueError(
                "a guide sensor and series come together: give both (a time-series recipe) "
                "or neither"
            )
        return self

    def _check_qa(self) -> None:
        checks = set(self.qa.checks)
        for lr_band, hr_band in self.qa.correspondence.items():
            if self.lr.band_group(lr_band) is None:
                raise ValueError(
                    f"correspondence names LR band {lr_band}, which no lr group reads: "
                    "add it to a group or remove it"
                )
            if self.hr.band_group(hr_band) is None:
                raise ValueError(
                    f"correspondence maps {lr_band} to HR band {hr_band}, which no hr group "
                    "reads: add it to a group or fix the name"
                )
        kinds = {s.kind for _, s in self.sensors()}
        if self.qa.correspondence and SensorKind.SAR in (self.lr.kind, self.hr.kind):
            raise ValueError(
                "correspondence pairs a SAR sensor's bands: spectral checks compare optical "
                "bands only, remove the correspondence"
            )
        needs = {
            Check.SHIFT: (bool(self.qa.correspondence), "a band correspondence"),
            Check.SPECTRAL: (bool(self.qa.correspondence), "a band correspondence"),
            Check.CLOUD: (
                any(s.cloud_mask for _, s in self.sensors()),
                "a sensor with cloud_mask",
            ),
            Check.SATURATED: (SensorKind.OPTICAL in kinds, "an optical sensor"),
            Check.REFLECTANCE_RANGE: (SensorKind.OPTICAL in kinds, "an optical sensor"),
            Check.BACKSCATTER_RANGE: (SensorKind.SAR in kinds, "a SAR sensor"),
        }
        for check, (ok, what) in needs.items():
            if check in checks and not ok:
                raise ValueError(f"check {check.value} needs {what}: add it or drop the check")

    def sensors(self) -> Iterator[tuple[Role, Sensor]]:
        """``(role, sensor)`` of every sensor the recipe has, LR first."""
        yield Role.LR, self.lr
        yield Role.HR, self.hr
        if self.guide is not None:
            yield Role.GUIDE, self.guide
