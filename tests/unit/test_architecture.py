"""The pure core stays pure: no network clients, no raster I/O, no CLIP in it.

Checked statically (every import statement, including those inside functions) so that a lazy
import added deep inside a function is caught too, and dynamically (importing the module in a
fresh interpreter must not pull the forbidden packages in through a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("ee", "pystac_client", "planetary_computer", "odc", "rasterio", "open_clip")
PURE_HARVEST = ("sampling", "grid", "pairing", "qa", "metrics", "cog", "ids", "hrefs")


def _pure_files() -> list[Path]:
    files = [ROOT / "harvest" / f"{name}.py" for name in PURE_HARVEST]
    files = [f for f in files if f.exists()]
    files += sorted((ROOT / "degradation").rglob("*.py"))
    return files


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_pure_modules_exist() -> None:
    names = {p.name for p in _pure_files()}
    assert "sampling.py" in names and "grid.py" in names


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io_client(path: Path) -> None:
    bad = _imported_roots(path) & set(FORBIDDEN)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "degradation").rglob("*.py")), ids=str)
def test_degradation_never_imports_harvest(path: Path) -> None:
    assert "harvest" not in _imported_roots(path)


def test_importing_the_pure_core_loads_no_io_client() -> None:
    modules = [f"harvest.{n}" for n in PURE_HARVEST if (ROOT / "harvest" / f"{n}.py").exists()]
    modules.append("degradation")
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "[]", out


def test_only_the_earth_engine_backend_imports_ee() -> None:
    importers = {
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "harvest").rglob("*.py"))
        if "ee" in _imported_roots(p)
    }
    assert importers == {"harvest/catalog/earthengine.py"}
