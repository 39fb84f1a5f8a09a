"""`harvest extend` as cron runs it: exit codes, --json, the lock, kill -9, a dead catalog."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import yaml

from harvest.config import load_build_config
from harvest.lock import folder_lock
from harvest.pipeline import run_build

REPO = Path(__file__).resolve().parents[2]
TWIN = REPO / "configs" / "builds" / "demo-sen2naip-cross-sensor.yaml"


def extend_cli(out: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harvest.cli", "extend", str(out), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def base(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built dataset of 2 ROIs, copied by each test that changes it."""
    out = tmp_path_factory.mktemp("base") / "ds"
    config = load_build_config(
        TWIN, [f"output={out}", f"catalog.world={demo_world}", "n=2", "prune.clusters=1"]
    )
    run_build(config)
    return out


def copy(base: Path, tmp_path: Path, name: str = "ds") -> Path:
    out = tmp_path / name
    shutil.copytree(base, out)
    # The copy is its own dataset: its config names its own folder.
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["output"] = str(out)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def state(out: Path) -> dict[str, Any]:
    """Everything an extension leaves, but wall-clock stamps."""
    m = gpd.read_parquet(out / "manifest.parquet")
    record = json.loads((out / "dataset.json").read_text())
    record.pop("updated")
    sel = gpd.read_parquet(out / "selection.parquet")
    return {
        "files": sorted(
            str(p.relative_to(out))
            for p in out.rglob("*")
            if p.is_file() and ".harvest" not in p.parts
        ),
        "rois": gpd.read_parquet(out / "rois.parquet").roi_id.tolist(),
        "pairs": gpd.read_parquet(out / "pairs.parquet")[
            ["roi_id", "lr_item_id", "hr_item_id"]
        ].to_dict("records"),
        "manifest": m[["roi_id", "status", "reasons", "sha256_lr", "sha256_hr"]]
        .sort_values("roi_id")
        .to_dict("records"),
        "selected": sorted(sel.path[sel.selected]),
        "n_selection": len(sel),
        "record": record,
        "changelog": (out / "CHANGELOG.md").read_text(),
        "pending": (out / ".harvest" / "extend.json").exists(),
    }


def test_json_line_and_exit_codes(base: Path, tmp_path: Path) -> None:
    out = copy(base, tmp_path)
    res = extend_cli(out, "--n", "5", "--json", cwd=tmp_path)  # from another folder, as cron
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["status"] == "extended" and summary["exit_code"] == 0
    assert (summary["previous_version"], summary["version"]) == ("1.0.0", "1.1.0")
    assert summary["new_rois"] == 5 and summary["new_kept"] >= 1

    # Nothing new: 3, the version stays.
    res = extend_cli(out, "--json")
    assert res.returncode == 3, res.stderr
    assert json.loads(res.stdout)["status"] == "nothing_new"
    assert json.loads((out / "dataset.json").read_text())["version"] == "1.1.0"

    # Bad input: 1, one line, and a JSON line too with --json.
    res = extend_cli(tmp_path / "nowhere", "--json")
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    assert json.loads(res.stdout)["status"] == "error"
    res = extend_cli(out, "--since", "2024-13-01")
    assert res.returncode in (1, 2) and "--since" in res.stderr


def test_a_second_run_exits_at_once_with_its_own_code(base: Path, tmp_path: Path) -> None:
    out = copy(base, tmp_path)
    before = state(out)
    with folder_lock(out, out / ".harvest" / "dataset.lock"):
        t0 = time.perf_counter()
        res = extend_cli(out, "--n", "3")
        assert time.perf_counter() - t0 < 30
    assert res.returncode == 4, res.stderr
    assert "in use by another harvest run" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert state(out) == before


def test_a_stale_lock_of_a_killed_run_is_taken_over(base: Path, tmp_path: Path) -> None:
    out = copy(base, tmp_path)
    lock = out / ".harvest" / "dataset.lock"
    code = (
        "import os, signal, sys\n"
        "from harvest.lock import folder_lock\n"
        f"held = folder_lock({str(out)!r}, {str(lock)!r})\n"
        "held.__enter__()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert died.returncode == -signal.SIGKILL and lock.exists()
    res = extend_cli(out, "--n", "3")
    assert res.returncode in (0, 3), res.stderr
    assert "taking over the lock" in res.stderr and "process is gone" in res.stderr


def test_kill_9_at_any_point_then_again_equals_an_uninterrupted_run(
    base: Path, tmp_path: Path
) -> None:
    reference = copy(base, tmp_path, "reference")
    res = extend_cli(reference, "--n", "5")
    assert res.returncode == 0, res.stderr
    expected = state(reference)
    assert not expected["pending"]
    killed_runs = 0
    for delay in (2.5, 3.0, 3.5, 4.0, 4.5, 5.0):
        out = copy(base, tmp_path, f"killed-{delay:g}")
        run = subprocess.Popen(
            [sys.executable, "-m", "harvest.cli", "extend", str(out), "--n", "5", "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(delay)
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            killed_runs += 1
            run.wait(timeout=30)
            done = json.loads((out / "dataset.json").read_text())["extensions"] == 1
            # Killed while exiting, its work done: running again would be a new extension.
            if not done or (out / ".harvest" / "extend.json").exists():
                # The same command again (what cron does next time) finishes the interrupted run.
                again = extend_cli(out, "--n", "5")
                assert again.returncode in (0, 3), (delay, again.stderr)
        got = state(out)
        for key in expected:
            assert got[key] == expected[key], (delay, key)
    assert killed_runs >= 3  # most kills hit a run in progress


def test_an_unreachable_catalog_is_a_temporary_failure(
    base: Path, tmp_path: Path, demo_world: Path
) -> None:
    out = copy(base, tmp_path)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["region"] = str(demo_world / "region.geojson")
    # The catalog moved to an address where nothing answers (a closed loopback port).
    cfg["catalog"] = {"source": "http://127.0.0.1:9/stac", "profile": "earth-search",
                      "timeout_s": 1}  # fmt: skip
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = state(out)
    res = extend_cli(out, "--json")
    assert res.returncode == 75, res.stderr
    assert json.loads(res.stdout)["exit_code"] == 75
    assert "run again later" in res.stderr
    after = state(out)
    assert {k: v for k, v in after.items() if k != "pending"} == {
        k: v for k, v in before.items() if k != "pending"
    }
