"""The shipped scheduler files: they parse, and they call `harvest extend` as it is."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

from harvest.stages import extend

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "contrib" / "systemd"
CRON = REPO / "contrib" / "cron" / "harvest-extend.cron"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def harvest_args(command: str) -> list[str]:
    """The arguments after the harvest executable of a command line."""
    words = shlex.split(command)
    i = next(k for k, w in enumerate(words) if w.endswith("/harvest"))
    return words[i + 1 :]


def test_service_and_timer() -> None:
    service = unit("harvest-extend.service")["Service"]
    assert service["Type"] == "oneshot"
    ok = {int(c) for c in service["SuccessExitStatus"].split()}
    assert ok == {extend.EXIT_NOTHING_NEW, extend.EXIT_BUSY}
    assert extend.EXIT_BAD_INPUT in {int(c) for c in service["RestartPreventExitStatus"].split()}
    assert extend.EXIT_RETRY not in ok and service["Restart"] == "on-failure"
    args = harvest_args(service["ExecStart"])
    assert args[:2] == ["extend", "/data/sen2naip"] and "--json" in args
    timer = unit("harvest-extend.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_cron_line_matches_the_docs() -> None:
    lines = [ln for ln in CRON.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(maxsplit=5)
    assert len(fields) == 6 and fields[:5] == ["0", "3", "1", "*", "*"]
    assert lines[0] in (REPO / "docs" / "scheduling.md").read_text()


def test_the_shipped_commands_are_valid_options(tmp_path: Path) -> None:
    """The options the files pass are accepted: only the (missing) dataset is refused."""
    for command in (unit("harvest-extend.service")["Service"]["ExecStart"], CRON.read_text()):
        line = next(ln for ln in command.splitlines() if "harvest extend" in ln)
        args = harvest_args(line.split(">>")[0])
        args[1] = str(tmp_path / "no-dataset")
        res = subprocess.run(
            [sys.executable, "-m", "harvest.cli", *args], capture_output=True, text=True
        )
        assert res.returncode == extend.EXIT_BAD_INPUT, res.stderr
        assert "not a dataset folder written by 'harvest build'" in res.stderr
