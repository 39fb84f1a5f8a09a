"""The plan of the demo world: which sites exist and what is acquired over each, when.

The schedule is fixed by design (so the pairs every later test expects are stable); only the
rendering parameters (landscape, PSF sigma, gamma, noise, shift, clouds) are drawn from the seed.

Pair cases, by construction (NAIP datetimes are midnight UTC, as the Planetary Computer
publishes them; S2 passes over CONUS at ~16-19 h UTC):

* same day: S2 on the NAIP date, dt ~ +17 h;
* one day apart: S2 the day before the NAIP date, dt ~ -7 h (within 24 h *and* one calendar day,
  so both usual definitions of "|dt| <= 1 day" agree);
* days apart: >= 3 days, never a pair.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from harvest.demo.landscape import LandscapeStyle

SceneKind = Literal["naip", "sentinel-2-l2a", "venus-l2a", "sentinel-1-grd"]
CloudCase = Literal["none", "partial", "heavy"]


@dataclass(frozen=True)
class SiteSpec:
    """A place of the world (centre in degrees, UTM zone from the longitude)."""

    site_id: str
    name: str
    country: str
    state: str | None
    lon: float
    lat: float
    style: LandscapeStyle
    venus_site: str | None = None

    @property
    def conus(self) -> bool:
        """True for sites inside the conterminous United States."""
        return self.country == "US"

    @property
    def utm_epsg(self) -> int:
        """EPSG code of the WGS84 UTM zone of the site centre."""
        zone = int((self.lon + 180.0) // 6.0) + 1
        return (32600 if self.lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class SceneSpec:
    """One acquisition to render.

    Attributes:
        kind: product (collection) of the scene.
        site_id: where.
        date: acquisition date, ``YYYY-MM-DD`` (UTC).
        platform: e.g. ``Sentinel-2A``; empty for NAIP / VENuS.
        cloud: cloud case over the site.
        nodata_edge: a swath edge (nodata) crosses the site centre.
        blank_patch: NAIP only: a constant-fill patch at the site centre.
        zero_shift: S2 / VENuS only: no misregistration.
        large_shift: S2 only: misregistered by 1.3 to 2 LR pixels (13-20 m), beyond QA's 1 px
            limit, instead of at most 0.6 px.
    """

    kind: SceneKind
    site_id: str
    date: str
    platform: str = ""
    cloud: CloudCase = "none"
    nodata_edge: bool = False
    blank_patch: bool = False
    zero_shift: bool = False
    large_shift: bool = False

    @property
    def key(self) -> str:
        """Stable key used to derive the scene's random stream."""
        return f"{self.site_id}/{self.kind}/{self.date}"


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines a world before rendering."""

    seed: int
    site_size_m: float
    sites: tuple[SiteSpec, ...]
    scenes: tuple[SceneSpec, ...] = field(default=())


US_ROWS = LandscapeStyle(field_weights=(5.0, 1.5, 1.5, 1.5, 0.8), farmsteads=3)

SITES: tuple[SiteSpec, ...] = (
    SiteSpec(
        "us-ia",
        "Story County, Iowa",
        "US",
        "ia",
        -93.55,
        42.03,
        LandscapeStyle((6.0, 1.0, 1.0, 1.5, 0.6), river=True, farmsteads=4),
    ),
    SiteSpec(
        "us-ks",
        "Finney County, Kansas",
        "US",
        "ks",
        -100.75,
        37.95,
        LandscapeStyle((3.0, 2.0, 1.0, 2.5, 0.2), pivots=3, road_spacing_m=1200.0, farmsteads=2),
    ),
    SiteSpec(
        "us-ca",
        "Fresno County, California",
        "US",
        "ca",
        -119.80,
        36.55,
        LandscapeStyle((4.0, 1.5, 1.0, 2.5, 0.8), town=True, pond=True, red_roofs=0.4),
    ),
    SiteSpec(
        "us-nc",
        "Wilson County, North Carolina",
        "US",
        "nc",
        -77.75,
        35.70,
        LandscapeStyle((3.0, 1.0, 1.5, 1.0, 3.0), river=True, pond=True, farmsteads=4),
    ),
    SiteSpec(
        "us-wa",
        "Whitman County, Washington",
        "US",
        "wa",
        -117.40,
        46.85,
        LandscapeStyle((3.0, 3.0, 1.0, 2.0, 0.3), road_spacing_m=1000.0, farmsteads=2),
    ),
    SiteSpec(
        "fr-lam",
        "Lamasquere, Occitanie",
        "FR",
        None,
        1.23,
        43.50,
        LandscapeStyle(
            (4.0, 2.0, 2.0, 1.5, 1.5),
            cardinal_rows=False,
            road_spacing_m=700.0,
            river=True,
            town=True,
            red_roofs=0.85,
        ),
        venus_site="FR-LAM",
    ),
    SiteSpec(
        "il-ses",
        "Sde Boker, Negev",
        "IL",
        None,
        34.78,
        30.87,
        LandscapeStyle(
            (1.5, 1.0, 0.5, 6.0, 0.2),
            cardinal_rows=False,
            road_spacing_m=1100.0,
            pivots=2,
            pond=True,
            farmsteads=2,
            red_roofs=0.3,
        ),
        venus_site="ISR-SDE",
    ),
)

S2: SceneKind = "sentinel-2-l2a"
NAIP: SceneKind = "naip"
VENUS: SceneKind = "venus-l2a"
S1: SceneKind = "sentinel-1-grd"

SCENES: tuple[SceneSpec, ...] = (
    # Iowa: a clean same-day pair with no shift, and S2 scenes days apart; S1 for sen12.
    SceneSpec(NAIP, "us-ia", "2021-07-10"),
    SceneSpec(S2, "us-ia", "2021-07-10", "Sentinel-2B", zero_shift=True),
    SceneSpec(S2, "us-ia", "2021-07-13", "Sentinel-2A"),
    SceneSpec(S2, "us-ia", "2021-08-22", "Sentinel-2A"),
    SceneSpec(S1, "us-ia", "2021-07-12", "Sentinel-1A"),
    SceneSpec(S1, "us-ia", "2021-08-17", "Sentinel-1B"),
    # Kansas: two NAIP years (early / late); a one-day pair, a heavy cloud scene, a same-day pair.
    SceneSpec(NAIP, "us-ks", "2021-06-20"),
    SceneSpec(S2, "us-ks", "2021-06-19", "Sentinel-2A"),
    SceneSpec(S2, "us-ks", "2021-06-24", "Sentinel-2B", cloud="heavy"),
    SceneSpec(NAIP, "us-ks", "2023-07-02"),
    SceneSpec(S2, "us-ks", "2023-07-02", "Sentinel-2A"),
    SceneSpec(S2, "us-ks", "2023-07-07", "Sentinel-2B"),
    SceneSpec(S1, "us-ks", "2021-06-22", "Sentinel-1A"),
    SceneSpec(S1, "us-ks", "2023-07-04", "Sentinel-1A"),
    # California: the only pair is cloudy over the site centre.
    SceneSpec(NAIP, "us-ca", "2022-06-05"),
    SceneSpec(S2, "us-ca", "2022-06-05", "Sentinel-2B", cloud="partial"),
    SceneSpec(S2, "us-ca", "2022-06-15", "Sentinel-2B"),
    # North Carolina: the only pair has a swath edge (nodata) across the site centre.
    SceneSpec(NAIP, "us-nc", "2022-08-14"),
    SceneSpec(S2, "us-nc", "2022-08-14", "Sentinel-2A", nodata_edge=True),
    SceneSpec(S2, "us-nc", "2022-08-11", "Sentinel-2B"),
    # Washington: a NAIP with a blank (constant) patch paired one day apart; an older clean pair
    # from before processing baseline 04.00 (no DN offset).
    SceneSpec(NAIP, "us-wa", "2022-07-20", blank_patch=True),
    SceneSpec(S2, "us-wa", "2022-07-19", "Sentinel-2B"),
    SceneSpec(NAIP, "us-wa", "2020-07-05"),
    SceneSpec(S2, "us-wa", "2020-07-05", "Sentinel-2A", zero_shift=True),
    # France (VENuS site): two clean same-day S2 / VENuS pairs, an S2 days apart, S1.
    SceneSpec(VENUS, "fr-lam", "2019-05-12", zero_shift=True),
    SceneSpec(S2, "fr-lam", "2019-05-12", "Sentinel-2A"),
    SceneSpec(VENUS, "fr-lam", "2019-06-01"),
    SceneSpec(S2, "fr-lam", "2019-06-01", "Sentinel-2B", zero_shift=True),
    SceneSpec(S2, "fr-lam", "2019-06-06", "Sentinel-2A"),
    SceneSpec(S1, "fr-lam", "2019-05-14", "Sentinel-1B"),
    SceneSpec(S1, "fr-lam", "2019-06-03", "Sentinel-1A"),
    # Israel (VENuS site): a clean and a cloudy same-day pair, an S2 days apart, S1.
    SceneSpec(VENUS, "il-ses", "2020-04-10"),
    SceneSpec(S2, "il-ses", "2020-04-10", "Sentinel-2A"),
    SceneSpec(VENUS, "il-ses", "2020-04-20", cloud="partial"),
    SceneSpec(S2, "il-ses", "2020-04-20", "Sentinel-2B", cloud="partial"),
    SceneSpec(S2, "il-ses", "2020-04-15", "Sentinel-2A"),
    SceneSpec(S1, "il-ses", "2020-04-12", "Sentinel-1A"),
)


#: Interior boxes (lon min, lat min, lon max, lat max) of agricultural states, well inside
#: their borders: extra sites are placed in them so their NAIP state code is right.
STATE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "ia": (-95.5, 41.0, -91.5, 43.0),
    "ks": (-101.5, 37.5, -95.5, 39.5),
    "ne": (-103.0, 40.5, -96.5, 42.5),
    "il": (-90.5, 38.5, -88.0, 41.5),
    "in": (-87.0, 38.5, -85.5, 41.0),
    "oh": (-84.2, 39.5, -81.5, 41.0),
    "mn": (-96.0, 44.0, -93.5, 46.5),
    "nd": (-103.5, 46.5, -97.5, 48.5),
    "sd": (-102.5, 43.5, -97.0, 45.5),
    "ok": (-99.0, 34.5, -95.5, 36.5),
    "tx": (-101.5, 31.0, -97.5, 34.0),
    "mo": (-93.5, 37.5, -91.5, 39.5),
    "ca": (-121.0, 36.0, -119.0, 38.0),
    "wa": (-119.5, 46.5, -117.5, 48.0),
}
#: Least distance between extra sites (degrees, about 20 km): sites never overlap.
EXTRA_SITE_SPACING_DEG = 0.2


def extra_sites(seed: int, n: int) -> tuple[tuple[SiteSpec, ...], tuple[SceneSpec, ...]]:
    """``n`` seeded CONUS sites beyond the standard ones, each with a NAIP / Sentinel-2 pair.

    Each site gets a NAIP in a summer of 2018-2023, an S2 on the same day (or the day before),
    and an S2 days apart; its cloud case, swath edge, blank patch, zero or large (> 1 px) shift
    are drawn, so the pairs span the standard world's cases and misregistration beyond QA's
    limit. Placement: a random state of
    :data:`STATE_BOXES`, at least :data:`EXTRA_SITE_SPACING_DEG` from every other site.
    """
    rng = derive_rng(seed, "extra-sites")
    states = sorted(STATE_BOXES)
    taken = [(s.lon, s.lat) for s in SITES]
    sites: list[SiteSpec] = []
    scenes: list[SceneSpec] = []
    while len(sites) < n:
        state = states[int(rng.integers(len(states)))]
        x0, y0, x1, y1 = STATE_BOXES[state]
        lon, lat = round(float(rng.uniform(x0, x1)), 4), round(float(rng.uniform(y0, y1)), 4)
        if any(abs(lon - a) < EXTRA_SITE_SPACING_DEG and abs(lat - b) < EXTRA_SITE_SPACING_DEG
               for a, b in taken):  # fmt: skip
            continue
        taken.append((lon, lat))
        k = len(sites) + 1
        weights = tuple(round(float(w), 2) for w in rng.uniform(0.2, 6.0, 5))
        style = LandscapeStyle(
            (weights[0], weights[1], weights[2], weights[3], weights[4]),
            road_spacing_m=float(rng.choice([800.0, 1000.0, 1200.0, 1600.0])),
            pivots=int(rng.integers(0, 4)),
            river=bool(rng.random() < 0.3),
            pond=bool(rng.random() < 0.3),
            town=bool(rng.random() < 0.15),
            farmsteads=int(rng.integers(1, 5)),
            red_roofs=round(float(rng.uniform(0.0, 0.4)), 2),
        )
        site_id = f"us-x{k:03d}"
        sites.append(SiteSpec(site_id, f"Extra site {k} ({state.upper()})", "US", state, lon,
                              lat, style))  # fmt: skip
        year = int(rng.integers(2018, 2024))
        day = np.datetime64(f"{year}-06-01") + int(rng.integers(0, 92))
        naip = str(day)
        one_day = bool(rng.random() < 0.3)
        s2_day = str(day - 1) if one_day else naip
        case = rng.random()
        cloud: CloudCase = "partial" if case < 0.15 else "none"
        platform = "Sentinel-2A" if rng.random() < 0.5 else "Sentinel-2B"
        scenes += [
            SceneSpec(NAIP, site_id, naip, blank_patch=bool(0.15 <= case < 0.22)),
            SceneSpec(
                S2, site_id, s2_day, platform, cloud=cloud,
                nodata_edge=bool(0.22 <= case < 0.3), zero_shift=bool(rng.random() < 0.2),
                large_shift=bool(0.3 <= case < 0.4),
            ),
            SceneSpec(S2, site_id, str(day + int(rng.integers(3, 15))), platform),
        ]  # fmt: skip
    return tuple(sites), tuple(scenes)


def default_spec(
    seed: int = 0,
    site_size_m: float = 2400.0,
    site_ids: tuple[str, ...] | None = None,
    n_sites: int | None = None,
) -> WorldSpec:
    """The standard world (optionally a subset of its sites, e.g. for fast tests).

    Args:
        seed: the world seed.
        site_size_m: side of each site.
        site_ids: keep only these standard sites.
        n_sites: the number of sites: the first ``n_sites`` standard sites, or all of them plus
            seeded CONUS sites (:func:`extra_sites`) up to ``n_sites`` (None: the standard 7).

    Raises:
        ValueError: for a site size that is not a positive multiple of 60 m, unknown site ids
            or a site count below 1.
    """
    if site_size_m <= 0 or site_size_m % 60:
        raise ValueError(f"site_size_m must be a positive multiple of 60 m, got {site_size_m}")
    sites = SITES
    if site_ids is not None:
        known = {s.site_id for s in SITES}
        unknown = sorted(set(site_ids) - known)
        if unknown:
            raise ValueError(f"unknown demo sites {unknown}; known: {sorted(known)}")
        sites = tuple(s for s in SITES if s.site_id in site_ids)
    extra: tuple[SceneSpec, ...] = ()
    if n_sites is not None:
        if n_sites < 1:
            raise ValueError(f"--sites must be at least 1, got {n_sites}")
        if n_sites <= len(sites):
            sites = sites[:n_sites]
        else:
            more, extra = extra_sites(seed, n_sites - len(sites))
            sites = sites + more
    ids = {s.site_id for s in sites}
    scenes = tuple(s for s in SCENES if s.site_id in ids) + extra
    return WorldSpec(seed=seed, site_size_m=float(site_size_m), sites=sites, scenes=scenes)


def derive_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the world seed and string keys (never on order)."""
    words: list[int] = []
    for k in keys:
        digest = hashlib.sha256(k.encode("utf-8")).digest()
        words.extend(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=tuple(words)))


def derive_int(seed: int, *keys: str, high: int = 2**31 - 1) -> int:
    """A deterministic integer in [0, high) from the seed and keys."""
    return int(derive_rng(seed, *keys).integers(0, high))
