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


# Reading or writing files in degradation/: the fit stage (harvest/stages/fit.py) reads chips and
# writes models, degradation/ only computes. pretrained.py is the one exception: it loads the
# published weights and fitted model folders.
FILE_CALLS = {
    "open",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "np.save",
    "np.savez",
    "np.savez_compressed",
    "np.load",
    "np.loadtxt",
    "np.savetxt",
    "torch.save",
    "torch.load",
    "json.load",
    "json.dump",
}
FILE_MODULES = {"pathlib", "shutil", "tempfile", "rasterio", "pyarrow", "h5py"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _file_io(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = sorted(_imported_roots(path) & FILE_MODULES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            # Methods (``p.read_text()``) match by their last part, functions by dotted name.
            if name in FILE_CALLS or name.rsplit(".", 1)[-1] in FILE_CALLS - {"open"} & {
                "read_text",
                "write_text",
                "read_bytes",
                "write_bytes",
            }:
                found.append(f"{name}() line {node.lineno}")
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in sorted((ROOT / "degradation").rglob("*.py")) if p.name != "pretrained.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_degradation_does_no_file_io(path: Path) -> None:
    assert _file_io(path) == [], f"{path.relative_to(ROOT)} does file I/O"


def test_the_file_io_check_sees_what_the_fit_stage_does() -> None:
    # The rule above must catch real I/O: the stage that reads chips and writes models has it.
    found = _file_io(ROOT / "harvest" / "stages" / "fit.py")
    assert any("read_text" in f for f in found), found


def test_the_cli_parses_and_samples_without_torch(tmp_path: Path) -> None:
    # torch takes seconds to import: listing commands, their help, or drawing ROIs must not
    # pay for it (the fit and degrade stages import it when they run).
    code = (
        "import sys\n"
        "from harvest.cli import main\n"
        "codes = [main(a) for a in (\n"
        "    ['--help'], ['degradation', 'fit', '--help'], ['degrade', '--help'],\n"
        f"    ['sample', '--n', '3', '--region', 'conus', '-o', {str(tmp_path / 'r.parquet')!r},\n"
        "     '--no-progress'],\n"
        ")]\n"
        "print('RESULT', codes, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout
    result = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert result == ["RESULT [0, 0, 0, 0] False"], out
    assert (tmp_path / "r.parquet").is_file()
