"""Every CLI command is one call of one stage's ``run``; stages and backends keep their layers.

A newcomer finds the code of ``harvest X`` in ``harvest/stages/X.py``: the command body only
parses options, builds the request and calls that module's ``run`` once.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from harvest.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _commands(
    typer_app: typer.Typer, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, Callable[..., Any]]]:
    for info in typer_app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.replace("_", "-")
        yield " ".join((*prefix, name)), info.callback
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None and group.name
        yield from _commands(group.typer_instance, (*prefix, group.name))


COMMANDS = dict(_commands(app))


def _stage_calls(fn: Callable[..., Any]) -> list[str]:
    """The ``harvest.stages.<module>.run`` calls in a command's body, by module."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "harvest.stages":
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harvest.stages."):
            for alias in node.names:
                if alias.name == "run":
                    aliases[alias.asname or "run"] = f"{node.module}:run"
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "run"
            and isinstance(func.value, ast.Name)
            and func.value.id in aliases
        ):
            calls.append(aliases[func.value.id])
        elif isinstance(func, ast.Name) and aliases.get(func.id, "").endswith(":run"):
            calls.append(aliases[func.id])
    return calls


def test_the_commands_are_the_documented_ones() -> None:
    assert {"sample", "search", "fetch", "qa", "degrade", "degradation fit"} <= set(COMMANDS)
    assert {"demo world", "demo run"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_calls_exactly_one_stage_run(command: str) -> None:
    calls = _stage_calls(COMMANDS[command])
    assert len(calls) == 1, f"'harvest {command}' calls {calls or 'no stage run'}"
    module = calls[0].split(":")[0].removeprefix("harvest.stages.")
    assert (ROOT / "harvest" / "stages" / f"{module}.py").is_file()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_body_does_no_stage_work_itself(command: str) -> None:
    """No pipeline, store, fetch or search module is called from a command body."""
    source = inspect.getsource(COMMANDS[command])
    for forbidden in ("harvest.pipeline", "harvest.store", "harvest.degrade ", "run_demo("):
        assert forbidden not in source, f"'harvest {command}' uses {forbidden.strip()}"


def test_each_stage_module_has_one_public_run() -> None:
    import importlib

    folder = ROOT / "harvest" / "stages"
    names = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    assert {"sample", "search", "fetch", "qa"} <= set(names)
    for name in names:
        module = importlib.import_module(f"harvest.stages.{name}")
        assert callable(getattr(module, "run", None)), f"harvest.stages.{name} has no run()"
        params = inspect.signature(module.run).parameters
        assert "progress" in params, f"harvest.stages.{name}.run takes no progress"
