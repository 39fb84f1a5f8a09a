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
PURE_HARVEST = (
    "sampling",
    "grid",
    "pairing",
    "qa",
    "metrics",
    "ids",
    "hrefs",
    "cluster",
    "sen2venus",
    "sentinel_hr",
)


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
    assert importers == {"harvest/backends/earthengine/session.py"}


# --- stages and backends ----------------------------------------------------------------------
# Stages (and the CLI) reach backends through the protocols and the registry only; backends never
# reach back into a stage; provider client libraries stay inside their backend package.
BACKENDS = ROOT / "harvest" / "backends"
BACKEND_INTERFACE = {"harvest.backends", "harvest.backends.base", "harvest.backends.registry"}
CLIENT_LIBRARIES = {"ee", "pystac_client", "duckdb"}


def _imported_modules(path: Path, where: Path | None = None) -> set[str]:
    """Every module an import statement names (``from a import b`` counts ``a`` and ``a.b``).

    Relative imports resolve against the package of ``where`` (default: ``path`` itself).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (where or path).relative_to(ROOT).with_suffix("").parts
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: -node.level]
                base = ".".join((*parent, node.module) if node.module else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _backend_modules_named(path: Path, where: Path | None = None) -> list[str]:
    """The backend modules beyond the interface (base, registry) that ``path`` imports."""
    return sorted(
        m
        for m in _imported_modules(path, where)
        if m.startswith("harvest.backends.") and m.split(".")[2] not in {"base", "registry"}
    )


def _stage_files() -> list[Path]:
    return sorted((ROOT / "harvest" / "stages").glob("*.py"))


def test_the_stage_and_backend_packages_exist() -> None:
    assert {p.stem for p in _stage_files()} >= {"sample", "search", "fetch", "qa"}
    families = {p.name for p in BACKENDS.iterdir() if (p / "__init__.py").is_file()}
    assert families >= {"stac_api", "stac_parquet", "earthengine", "gdal"}
    assert not (ROOT / "harvest" / "catalog").exists()
    assert not (ROOT / "harvest" / "read.py").exists()


@pytest.mark.parametrize(
    "path", [*_stage_files(), ROOT / "harvest" / "cli.py"], ids=lambda p: p.name
)
def test_stages_and_the_cli_never_import_a_backend_module(path: Path) -> None:
    assert _backend_modules_named(path) == [], f"{path.relative_to(ROOT)} names a backend"


def test_the_backend_import_check_catches_every_spelling(tmp_path: Path) -> None:
    stage = tmp_path / "stage.py"
    stage.write_text(
        "from harvest.backends.base import SceneRef\n"
        "from harvest.backends.registry import reader_for\n"
        "from harvest.backends import registry\n"
        "def f():\n"
        "    from harvest.backends import stac_api\n"
        "    import harvest.backends.gdal.reader\n"
        "    from ..backends.stac_parquet import catalog\n"
    )
    # Checked as if the file were a stage module (the relative import resolves from there).
    found = _backend_modules_named(stage, where=ROOT / "harvest" / "stages" / "example.py")
    assert found == [
        "harvest.backends.gdal.reader",
        "harvest.backends.stac_api",
        "harvest.backends.stac_parquet",
        "harvest.backends.stac_parquet.catalog",
    ]


@pytest.mark.parametrize(
    "path", sorted(BACKENDS.rglob("*.py")), ids=lambda p: str(p.relative_to(BACKENDS))
)
def test_backends_never_import_a_stage(path: Path) -> None:
    stages = sorted(
        m
        for m in _imported_modules(path)
        if m == "harvest.stages" or m.startswith("harvest.stages.")
    )
    assert stages == [], f"{path.relative_to(ROOT)} imports {stages}"


def test_a_fetch_worker_loads_no_search_client() -> None:
    # What a worker does: sign Planetary Computer hrefs, build its GDAL reader, unpickle settings.
    code = (
        "import pickle, sys\n"
        "from harvest.backends.registry import ReaderSettings, reader_for, signer_for\n"
        "s = ReaderSettings(sign=signer_for('planetary-computer'))\n"
        "reader_for('/a.tif', pickle.loads(pickle.dumps(s)))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(CLIENT_LIBRARIES)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "[]", out


def test_client_libraries_are_imported_only_inside_their_backend() -> None:
    importers: dict[str, set[str]] = {}
    for path in sorted((ROOT / "harvest").rglob("*.py")):
        for lib in _imported_roots(path) & CLIENT_LIBRARIES:
            importers.setdefault(lib, set()).add(str(path.relative_to(BACKENDS.parent.parent)))
    assert importers == {
        "ee": {"harvest/backends/earthengine/session.py"},
        "pystac_client": {
            "harvest/backends/stac_api/catalog.py",
            "harvest/backends/stac_api/transport.py",
        },
        "duckdb": {"harvest/backends/stac_parquet/catalog.py"},
    }


# Reading or writing files in degradation/: the fit stage (harvest/stages/fit.py) reads chips and
# writes models, degradation/ only computes. pretrained.py is the one exception: it loads the
# published weights and fitted model folders.
FILE_FUNCTIONS = {
    "open",
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
FILE_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink"}
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
            # Functions match by dotted name, methods (``path.read_text()``) by their last part.
            if name in FILE_FUNCTIONS or name.rsplit(".", 1)[-1] in FILE_METHODS:
                found.append(f"{name}() line {node.lineno}")
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in sorted((ROOT / "degradation").rglob("*.py")) if p.name != "pretrained.py"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_degradation_does_no_file_io(path: Path) -> None:
    assert _file_io(path) == [], f"{path.relative_to(ROOT)} does file I/O"


def test_the_file_io_check_catches_reads_writes_and_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import shutil\nimport numpy as np\n"
        "def f(p):\n    np.save(p, 1)\n    return p.read_text(), open(p)\n"
    )
    found = _file_io(module)
    assert found == ["shutil", "np.save() line 4", "p.read_text() line 5", "open() line 5"]


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
