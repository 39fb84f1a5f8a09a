"""What a user sees from the bare CLI: help, version, usage errors."""

from __future__ import annotations

import subprocess
import sys

import harvest


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harvest.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_commands() -> None:
    res = run_cli("--help")
    assert res.returncode == 0
    for command in ("sample", "demo"):
        assert command in res.stdout


def test_demo_help_lists_world() -> None:
    res = run_cli("demo", "--help")
    assert res.returncode == 0
    assert "world" in res.stdout


def test_version() -> None:
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"harvest {harvest.__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    res = run_cli("no-such-command")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error:")


def test_missing_required_option_is_a_usage_error() -> None:
    res = run_cli("sample", "-o", "x.parquet")
    assert res.returncode == 2
    assert "--n" in res.stderr
    assert "Traceback" not in res.stderr


def test_console_script_is_installed() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("harvest") == "harvest.cli:main"


def test_unwritable_output_is_a_one_line_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = run_cli("demo", "world", str(blocker / "world"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error: ")


def test_verbose_shows_the_details_of_an_error(tmp_path) -> None:
    res = run_cli("-v", "sample", "--n", "3", "--region", str(tmp_path / "nope.gpkg"), "-o", "x")
    assert res.returncode == 1
    assert "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: region file not found")
