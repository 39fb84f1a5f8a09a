"""Safe ids and the inside-the-output-folder check, alone and inside the store's writers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harvest.errors import HarvestError, InputFileError, UnsafeIdError, UnsafePathError
from harvest.grid import ChipGrid
from harvest.ids import (
    MAX_ID_LENGTH,
    SAFE_ID_PATTERN,
    check_id,
    check_ids,
    ensure_inside,
    is_inside,
    is_safe_id,
)
from harvest.store import (
    STATUS_DIR,
    atomic_folder,
    chip_folder,
    clean_temporaries,
    iter_chip_folders,
    load_status,
    load_statuses,
    move_chip_folder,
    write_chip_folder,
    write_status,
)

GOOD = [
    "ROI_000001",
    "ROI_1",
    "32618_583420_4507880",
    "m_3008501_ne_16_1_20110815",
    "S2A_MSIL2A_20210601T170531_R012_T14SAA_20210601T120000",
    "ok_m_3509000_ne_14_060_20210612",
    "a.b-c_d",
    "-1",
    "x",
    "x" * MAX_ID_LENGTH,
]
BAD = [
    "",
    ".",
    "..",
    ".hidden",
    ".ROI_1.tmp-123-abcdef00",
    "../../escape",
    "..\\..\\escape",
    "/etc/passwd",
    "C:\\temp",
    "a/b",
    "a b",
    "a\nb",
    "a\x00b",
    "ROI_1\n",
    "é",
    "ROI:1",
    "~",
    "x" * (MAX_ID_LENGTH + 1),
    None,
    3,
    b"ROI_1",
]


@pytest.mark.parametrize("value", GOOD)
def test_safe_ids_pass_unchanged(value: str) -> None:
    assert is_safe_id(value)
    assert check_id(value, field="roi_id") == value


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_unsafe_ids_are_a_one_line_input_error_naming_field_value_and_place(value: object) -> None:
    assert not is_safe_id(value)
    with pytest.raises(UnsafeIdError) as info:
        check_id(value, field="roi_id", where="pairs.parquet row 2")
    message = str(info.value)
    assert isinstance(info.value, InputFileError)
    assert len(message.splitlines()) == 1
    assert message.startswith("pairs.parquet row 2: roi_id ")
    assert repr(value)[:20] in message  # the value, escaped so that it stays on one line
    assert "letters, digits" in message and "run again" in message
    assert len(message) < 450


def test_the_documented_pattern_matches_the_check() -> None:
    import re

    pattern = re.compile(rf"\A{SAFE_ID_PATTERN}\Z")
    for value in GOOD:
        assert pattern.match(value)
    for value in BAD:
        assert not (isinstance(value, str) and pattern.match(value))


def test_check_ids_names_the_first_bad_row_counting_from_one() -> None:
    check_ids(["ROI_1", "ROI_2"], field="roi_id", source="rois.parquet")
    with pytest.raises(UnsafeIdError, match=r"^rois\.parquet row 3: roi_id '\.\./x' "):
        check_ids(["ROI_1", "ROI_2", "../x", "/abs"], field="roi_id", source="rois.parquet")


def test_a_long_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(UnsafeIdError) as info:
        check_id("/" + "a" * 5000, field="naip_id")
    assert len(str(info.value)) < 450 and "..." in str(info.value)


def test_ensure_inside_accepts_children_and_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    assert ensure_inside(root / "cross-sensor" / "ROI_1", root) == root / "cross-sensor" / "ROI_1"
    assert is_inside(root / "a" / ".." / "b", root)
    for bad in (
        root / "cross-sensor" / ".." / ".." / "escape",
        root / "/etc",
        tmp_path / "elsewhere",
        root,  # the folder itself is never written or removed as a chip
        root / ".",
    ):
        assert not is_inside(bad, root)
        with pytest.raises(UnsafePathError) as info:
            ensure_inside(bad, root)
        assert isinstance(info.value, HarvestError)
        assert str(bad) in str(info.value) and len(str(info.value).splitlines()) == 1


def test_ensure_inside_follows_symbolic_links(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "cross-sensor").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    # A link as the last component, and a link as a folder along the way.
    (root / "cross-sensor" / "ROI_1").symlink_to(victim, target_is_directory=True)
    (root / "rejected").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        ensure_inside(root / "cross-sensor" / "ROI_1", root)
    with pytest.raises(UnsafePathError):
        ensure_inside(root / "rejected" / "ROI_2", root)
    # A link that stays inside is fine, and so is an output folder that is itself a link.
    (root / "cross-sensor" / "ROI_3").symlink_to(root / "cross-sensor", target_is_directory=True)
    assert is_inside(root / "cross-sensor" / "ROI_3", root)
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    assert is_inside(alias / "cross-sensor" / "ROI_9", alias)
    assert is_inside(root / "cross-sensor" / "ROI_9", alias)


# --- the store's writers ---------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the SHA-256 of its bytes (or the kind of entry)."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p)] = f"link -> {p.readlink()}"
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "dir"
    return out


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("do not delete")
    return victim


def _write_chip(out: Path, roi_id: str, kept: bool = True) -> None:
    grid = ChipGrid(32614, _affine(10.0), 4, 4, 10.0)
    hr_grid = ChipGrid(32614, _affine(2.5), 16, 16, 2.5)
    write_chip_folder(
        out, roi_id, kept=kept,
        lr=np.zeros((4, 4, 4), np.float32), lr_grid=grid, lr_bands=["B04", "B03", "B02", "B08"],
        hr=np.zeros((4, 16, 16), np.float32), hr_grid=hr_grid, hr_bands=["R", "G", "B", "N"],
        scl=None, metadata={"roi_id": roi_id},
    )  # fmt: skip


def _affine(gsd: float) -> Any:
    from affine import Affine

    return Affine(gsd, 0.0, 500000.0, 0.0, -gsd, 4000000.0)


@pytest.mark.parametrize("roi_id", ["../../victim", "../../victim/sub", "/abs/victim", ".."])
def test_store_refuses_unsafe_roi_ids_before_touching_anything(tmp_path: Path, roi_id: str) -> None:
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    victim = _victim(tmp_path)
    if roi_id.startswith("/abs"):
        roi_id = str(victim)
    before = _tree(tmp_path)
    for call in (
        lambda: chip_folder(out, roi_id, True),
        lambda: _write_chip(out, roi_id),
        lambda: move_chip_folder(out, roi_id, False),
        lambda: write_status(out, roi_id, {"status": "kept"}),
        lambda: load_status(out, roi_id),
    ):
        with pytest.raises(UnsafeIdError):
            call()
    assert _tree(tmp_path) == before


def test_store_never_writes_or_removes_through_a_symbolic_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "cross-sensor").mkdir(parents=True)
    victim = _victim(tmp_path)
    # Planted links: a chip folder, the rejected/ folder and the status folder lead outside.
    (out / "cross-sensor" / "ROI_1").symlink_to(victim, target_is_directory=True)
    (out / "rejected").symlink_to(victim, target_is_directory=True)
    (out / ".harvest").mkdir()
    (out / STATUS_DIR).symlink_to(victim, target_is_directory=True)
    (victim / ".ROI_9.tmp-1-deadbeef").mkdir()  # a temporary name: clean-up must not reach it
    before = _tree(tmp_path)
    with pytest.raises(UnsafePathError):
        _write_chip(out, "ROI_1", kept=True)  # would replace the linked folder
    with pytest.raises(UnsafePathError):
        _write_chip(out, "ROI_2", kept=False)  # would write into the linked rejected/
    with pytest.raises(UnsafePathError):
        _write_chip(out, "ROI_2", kept=True)  # would remove ROI_2 from the linked rejected/
    with pytest.raises(UnsafePathError):
        move_chip_folder(out, "ROI_1", False)
    with pytest.raises(UnsafePathError):
        write_status(out, "ROI_1", {"status": "kept"})
    with pytest.raises(UnsafePathError), atomic_folder(out / "cross-sensor" / "ROI_1", root=out):
        pass
    with pytest.raises(UnsafePathError):
        list(iter_chip_folders(out))
    clean_temporaries(out)
    assert _tree(tmp_path) == before


def test_chips_with_safe_ids_are_still_written_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write_chip(out, "ROI_000001")
    _write_chip(out, "32614_500000_4000000", kept=False)
    write_status(out, "ROI_000001", {"status": "kept"})
    assert [(r, k) for r, _, k in iter_chip_folders(out)] == [
        ("ROI_000001", True),
        ("32614_500000_4000000", False),
    ]
    assert move_chip_folder(out, "ROI_000001", False).is_dir()
    assert load_statuses(out) == {"ROI_000001": {"status": "kept"}}


def test_foreign_names_in_a_dataset_folder_are_one_line_errors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write_chip(out, "ROI_000001")
    write_status(out, "ROI_000001", {"status": "kept"})
    (out / STATUS_DIR / "my notes.json").write_text(json.dumps({"status": "kept"}))
    with pytest.raises(UnsafeIdError, match=r"my notes\.json: roi_id 'my notes' .* move it out"):
        load_statuses(out)
    (out / STATUS_DIR / "my notes.json").unlink()
    (out / "cross-sensor" / "copy of ROI_000001").mkdir()
    with pytest.raises(UnsafeIdError, match="copy of ROI_000001"):
        list(iter_chip_folders(out))
