"""SEN2NAIP's ``test`` field holds the string "train" or "test": read both that and booleans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harvest.stages.fit import read_pairs
from harvest.writers.sen2naip import chip_split_of


@pytest.mark.parametrize(
    ("meta", "split"),
    [
        ({"test": "train"}, "train"),
        ({"test": "test"}, "test"),
        ({"test": "Test"}, "test"),
        ({"test": True}, "test"),
        ({"test": False}, "train"),
        ({"split": "test"}, "test"),
        ({"test": "train", "split": "test"}, "train"),  # the paper's field wins
        ({}, "train"),
    ],
)
def test_every_form_of_the_field(meta: dict[str, object], split: str) -> None:
    assert chip_split_of(meta) == split


def test_a_published_folder_whose_chips_say_train_has_train_chips(
    demo_pairs: Path, tmp_path: Path
) -> None:
    """A folder laid out as published (no ``split``; ``"test": "train"``) fits on its chips."""
    folder = tmp_path / "published"
    shutil.copytree(demo_pairs / "cross-sensor", folder / "cross-sensor")
    chips = sorted((folder / "cross-sensor").glob("ROI_*"))
    for i, chip in enumerate(chips):
        meta_path = chip / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta.pop("split", None)
        meta["test"] = "test" if i == 0 else "train"
        meta_path.write_text(json.dumps(meta))
    train = read_pairs(folder, split="train")
    test = read_pairs(folder, split="test")
    assert len(train) == len(chips) - 1 and len(test) == 1


def test_harvest_writes_the_papers_form(demo_pairs: Path) -> None:
    for meta_path in (demo_pairs / "cross-sensor").glob("ROI_*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        assert meta["test"] in ("train", "test") and meta["test"] == meta["split"]
