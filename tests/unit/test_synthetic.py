"""The synthetic set's recipe and acquisitions table (harvest.stages._synthetic)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import shapely

from harvest.backends.base import AssetRef, SceneRef
from harvest.errors import ConfigError, InputFileError
from harvest.grid import ChipLayout
from harvest.recipes import load_recipe
from harvest.stages._synthetic import (
    Acquisition,
    _write_acquisitions,
    read_acquisitions,
    synthetic_recipe,
)


def test_synthetic_recipe_nests_the_paper_chip_and_refuses_one_that_does_not() -> None:
    recipe = synthetic_recipe(load_recipe("sen2naip"), 1100)
    assert (recipe.hr.chip_px, recipe.lr.chip_px) == (1100, 275)
    assert ChipLayout.from_recipe(recipe).side_m == pytest.approx(2750.0)
    assert load_recipe("sen2naip").hr.chip_px == 484  # the recipe itself is untouched
    with pytest.raises(ConfigError, match="multiple of 4"):
        synthetic_recipe(load_recipe("sen2naip"), 1102)


def scene(item_id: str, year: int) -> SceneRef:
    return SceneRef(
        item_id=item_id,
        collection="naip",
        provider="planetary-computer",
        datetime=datetime(year, 7, 1, tzinfo=UTC),
        geometry=shapely.box(-100.1, 39.9, -99.9, 40.1),
        assets={"red": AssetRef(f"https://example.com/{item_id}.tif", dtype="uint8")},
    )


def test_acquisitions_round_trip_chosen_and_dropped_rows(tmp_path: Path) -> None:
    rows = [
        Acquisition(
            "ROI_000001", -100.0, 40.0, 32614, (2.5, 0.0, 1000.0, 0.0, -2.5, 5000.0), 1100,
            "chosen", "", 3, scene("a_2013", 2013), scene("a_2021", 2021),
        ),
        Acquisition(
            "ROI_000002", -99.0, 41.0, 32614, (2.5, 0.0, 2000.0, 0.0, -2.5, 6000.0), 1100,
            "single_acquisition", "only 2019", 1,
        ),
    ]  # fmt: skip
    path = tmp_path / "acquisitions.parquet"
    _write_acquisitions(path, rows)
    back = read_acquisitions(path)
    assert back == rows
    assert back[0].scene("late").assets["red"].dtype == "uint8"
    assert read_acquisitions(tmp_path / "missing.parquet") == []
    path.write_bytes(b"not parquet")
    with pytest.raises(InputFileError, match="delete it to search again"):
        read_acquisitions(path)
