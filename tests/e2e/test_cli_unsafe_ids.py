"""Crafted ids cannot make a command write or delete outside its output folder.

A ``roi_id`` or ``naip_id`` such as ``../../escape`` or an absolute path used to become a folder
name as is: ``harvest fetch`` replaced an existing folder beside the output folder (its files
were gone) and ``harvest degrade`` did the same through a chip's metadata.json. Each command now
stops with a one-line error naming the row (exit 1) before it writes anything; a victim folder
outside keeps its files, and nothing under the test's folder changes at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_cli_fetch import harvest, write_demo_pairs

from harvest.geoio import write_points_geoparquet


def tree(folder: Path) -> dict[str, str]:
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


def make_victim(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("years of work")
    return folder


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def set_column(path: Path, name: str, row: int, value: str) -> None:
    """Overwrite one cell of a parquet file, keeping its schema and metadata (a crafted file)."""
    table = pq.read_table(path)
    values = table.column(name).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(name)
    table = table.set_column(i, table.schema.field(i), pa.array(values, pa.string()))
    pq.write_table(table, path)


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_fetch_refuses_a_crafted_roi_id_and_leaves_the_victim_alone(
    demo_world: Path, tmp_path: Path, kind: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    write_demo_pairs(demo_world, work / "pairs.parquet", [(0.0, 0.0)])
    # ds/cross-sensor/../../escape is work/escape; the absolute one is tmp_path/escape.
    victim = make_victim(work / "escape" if kind == "relative" else tmp_path / "escape")
    bad = "../../escape" if kind == "relative" else str(victim)
    set_column(work / "pairs.parquet", "roi_id", 1, bad)  # file row 2
    before = tree(tmp_path)
    proc = harvest(
        "fetch", "pairs.parquet", "--recipe", "sen2naip", "-o", "ds", "--no-progress", cwd=work
    )
    line = one_line_error(proc)
    assert "pairs.parquet row 2: roi_id " in line and repr(bad) in line
    assert (victim / "precious.txt").read_text() == "years of work"
    assert not (work / "ds").exists()  # checked before the output folder is made
    assert tree(tmp_path) == before


def test_search_refuses_a_crafted_roi_id_in_the_roi_table(demo_world: Path, tmp_path: Path) -> None:
    ids = ["ROI_000001", "../../escape", "ROI_000003"]
    lon, lat = np.array([10.0, 10.1, 10.2]), np.array([45.0, 45.1, 45.2])
    write_points_geoparquet(tmp_path / "rois.parquet", lon, lat, {"roi_id": ids})
    before = tree(tmp_path)
    proc = harvest(
        "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", str(demo_world),
        "-o", "pairs.parquet", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(proc)
    assert "rois.parquet row 2: roi_id '../../escape'" in line
    assert tree(tmp_path) == before  # no pairs.parquet, no dropped file


def test_sample_refuses_a_crafted_roi_id_in_the_exclude_table(tmp_path: Path) -> None:
    victim = make_victim(tmp_path / "victim")
    ids = ["ROI_000001", str(victim)]
    write_points_geoparquet(
        tmp_path / "old.parquet", np.array([-100.0, -99.0]), np.array([40.0, 41.0]), {"roi_id": ids}
    )
    before = tree(tmp_path)
    proc = harvest(
        "sample", "--n", "2", "-o", "new.parquet", "--exclude", "old.parquet", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(proc)
    assert f"old.parquet row 2: roi_id {str(victim)!r}" in line
    assert tree(tmp_path) == before


@pytest.fixture
def crafted_chips(demo_pairs: Path, tmp_path: Path) -> Path:
    """Two kept chips of the demo set copied into tmp_path/in (a cross-sensor folder)."""
    src = tmp_path / "in"
    for chip in sorted((demo_pairs / "cross-sensor").glob("ROI_*"))[:2]:
        shutil.copytree(chip, src / "cross-sensor" / chip.name)
    return src


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_degrade_refuses_a_crafted_naip_id_and_leaves_the_victim_alone(
    crafted_chips: Path, tmp_path: Path, kind: str
) -> None:
    chip = sorted((crafted_chips / "cross-sensor").iterdir())[1]
    meta_path = chip / "metadata.json"
    meta = json.loads(meta_path.read_text())
    # out/synthetic/ROI_x/../../../escape is tmp_path/escape.
    meta["naip_id"] = "../../../escape" if kind == "relative" else str(tmp_path / "escape")
    meta_path.write_text(json.dumps(meta))
    victim = make_victim(tmp_path / "escape")
    before = tree(tmp_path)
    proc = harvest(
        "degrade", str(crafted_chips), "--model", "sen2naip", "-o", str(tmp_path / "out"),
        "--methods", "statistical", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(proc)
    assert f"{meta_path}: naip_id {meta['naip_id']!r}" in line
    assert (victim / "precious.txt").read_text() == "years of work"
    assert not (tmp_path / "out").exists()
    assert tree(tmp_path) == before


def test_qa_refuses_a_chip_folder_linked_out_of_the_dataset(
    demo_pairs: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(demo_pairs, ds)
    chip = sorted((ds / "cross-sensor").iterdir())[0]
    victim = tmp_path / "victim"
    shutil.move(chip, victim)  # a real chip's files, so that QA would rewrite and move them
    chip.symlink_to(victim, target_is_directory=True)
    before = tree(tmp_path)
    proc = harvest("qa", "ds", "--max-shift-px", "0.01", "--no-progress", cwd=tmp_path)
    line = one_line_error(proc)
    assert f"ds/cross-sensor/{chip.name}" in line and "outside the output folder" in line
    assert tree(tmp_path) == before
