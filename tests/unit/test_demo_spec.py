"""The demo world's plan: `--sites N` (extra seeded CONUS sites with their pairs)."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from shapely.geometry import Point, box

from harvest.demo.spec import (
    EXTRA_SITE_SPACING_DEG,
    NAIP,
    S2,
    SITES,
    STATE_BOXES,
    default_spec,
    extra_sites,
)
from harvest.regions import load_region


def test_the_default_world_is_unchanged_by_the_site_count_option() -> None:
    assert default_spec(0) == default_spec(0, n_sites=len(SITES))
    few = default_spec(0, n_sites=3)
    assert few.sites == SITES[:3]
    assert {s.site_id for s in few.scenes} == {s.site_id for s in SITES[:3]}
    with pytest.raises(ValueError, match="at least 1"):
        default_spec(0, n_sites=0)


def test_extra_sites_are_seeded_spread_inside_conus_and_each_has_a_pair() -> None:
    sites, scenes = extra_sites(0, 40)
    assert len(sites) == 40 and len({s.site_id for s in sites}) == 40
    again, again_scenes = extra_sites(0, 40)
    assert (again, again_scenes) == (sites, scenes)
    assert extra_sites(1, 40)[0] != sites
    # The first sites do not depend on how many are asked for.
    assert extra_sites(0, 5)[0] == sites[:5]
    conus = load_region("conus").geometry
    for s in sites:
        assert conus.contains(Point(s.lon, s.lat)) and s.conus and s.state in STATE_BOXES
        assert box(*STATE_BOXES[s.state]).contains(Point(s.lon, s.lat))
    for a, b in itertools.combinations([*SITES, *sites], 2):
        assert (
            abs(a.lon - b.lon) >= EXTRA_SITE_SPACING_DEG
            or abs(a.lat - b.lat) >= EXTRA_SITE_SPACING_DEG
        ), (a.site_id, b.site_id)
    for s in sites:
        mine = [x for x in scenes if x.site_id == s.site_id]
        naip = [x for x in mine if x.kind == NAIP]
        s2 = [x for x in mine if x.kind == S2]
        assert len(naip) == 1 and len(s2) == 2
        # One S2 on the NAIP day or the day before (a pair), one days after (never a pair).
        gaps = sorted((int((_day(x.date) - _day(naip[0].date)).days)) for x in s2)
        assert gaps[0] in (-1, 0) and gaps[1] >= 3
    # The cases vary: some clouds, swath edges or blank patches among 40 sites.
    assert any(x.cloud != "none" for x in scenes)
    assert any(x.nodata_edge for x in scenes) and any(x.blank_patch for x in scenes)


def _day(text: str) -> date:
    return date.fromisoformat(text)
