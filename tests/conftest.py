"""Shared fixtures. The demo world is built once per cache folder and shared by every test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# A missing pretrained tag must fail at once instead of retrying the network for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_WORLD_SEED = 0


def harvest_cache_dir() -> Path:
    """Where tests keep expensive artefacts: ``$HARVEST_CACHE_DIR`` or ``<repo>/.cache/harvest``."""
    env = os.environ.get("HARVEST_CACHE_DIR")
    return Path(env) if env else REPO_ROOT / ".cache" / "harvest"


@pytest.fixture(scope="session")
def demo_world() -> Path:
    """Path of the standard demo world (seed 0), built on first use and cached across runs.

    ``run_demo_world`` builds in a sibling temporary folder and renames it into place only when
    complete, and reuses a complete world of the same seed and format, so a killed run never
    leaves a half world behind and later runs cost nothing.
    """
    from harvest.demo.world import WORLD_FORMAT, run_demo_world

    out = harvest_cache_dir() / f"demo-world-seed{DEMO_WORLD_SEED}-format{WORLD_FORMAT}"
    run_demo_world(out_dir=out, seed=DEMO_WORLD_SEED, progress=False)
    return out


#: Sites of the larger demo world: the standard 7 and 4 seeded CONUS sites (one of them with an
#: S2 scene misregistered beyond QA's 1 px).
LARGE_WORLD_SITES = 11


@pytest.fixture(scope="session")
def large_demo_world() -> Path:
    """The demo world with ``--sites 11`` (seed 0), built on first use and cached like
    :func:`demo_world`."""
    from harvest.demo.world import WORLD_FORMAT, run_demo_world

    out = (
        harvest_cache_dir()
        / f"demo-world-seed{DEMO_WORLD_SEED}-sites{LARGE_WORLD_SITES}-format{WORLD_FORMAT}"
    )
    run_demo_world(out_dir=out, seed=DEMO_WORLD_SEED, n_sites=LARGE_WORLD_SITES, progress=False)
    return out


#: Offsets (metres, from each site's chip-safe centre) of the demo chips used by degradation tests.
DEMO_PAIR_OFFSETS_M = ((-300.0, -300.0), (300.0, 300.0))


@pytest.fixture(scope="session")
def demo_pairs(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-sensor folder fetched once per session from the demo world's clean sen2naip pairs.

    Two chips per clean Sentinel-2 scene (four scenes), written by the fetch stage exactly as
    ``harvest fetch`` writes them (LR not shift-corrected; shifts in metadata.json).
    """
    from harvest.demo.pairs import truth_pair_rows
    from harvest.recipes import load_recipe
    from harvest.stages.fetch import run as run_fetch

    recipe = load_recipe("sen2naip")
    jobs = truth_pair_rows(demo_world, recipe, DEMO_PAIR_OFFSETS_M, clean_only=True, id_digits=5)
    out = tmp_path_factory.mktemp("demo-pairs") / "dataset"
    run_fetch(jobs, recipe, out)
    return out


#: ``PYTHONPATH`` folder whose sitecustomize makes writes hit ENOSPC (tests/fixtures/faults).
FAULTS_DIR = REPO_ROOT / "tests" / "fixtures" / "faults"


@pytest.fixture
def disk_full_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``disk_full_after(n)``: a full disk after ``n`` more files, in this process.

    harvest's guarded writes (:mod:`harvest.diskio`: chip files, status files, the run file)
    let ``n`` files through, then fail like a full disk: ``write()`` raises ENOSPC naming no
    file.
    """
    import importlib.util

    import harvest.diskio

    spec = importlib.util.spec_from_file_location(
        "harvest_test_faults", FAULTS_DIR / "sitecustomize.py"
    )
    assert spec is not None and spec.loader is not None
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)

    def install(n_files: int) -> None:
        monkeypatch.setattr(harvest.diskio, "open", faults.full_after(n_files), raising=False)

    return install


@pytest.fixture(scope="session")
def demo_build(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``configs/builds/demo.yaml`` built once per session on the shared demo world.

    Read-only for the tests that share it: copy it before changing anything.
    """
    from harvest.config import load_build_config
    from harvest.pipeline import run_build

    out = tmp_path_factory.mktemp("demo-build") / "demo-out"
    sets = [f"output={out}", f"catalog.world={demo_world}"]
    run_build(load_build_config(REPO_ROOT / "configs" / "builds" / "demo.yaml", sets))
    return out


# The ml-aoi extension's item field, as its specification defines it (train, validate, test):
# pystac validates extensions against their schemas, which it would download.
ML_AOI_SCHEMA_DOC = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://stac-extensions.github.io/ml-aoi/v0.2.0/schema.json",
    "type": "object",
    "if": {"properties": {"type": {"const": "Feature"}}},
    "then": {
        "required": ["properties"],
        "properties": {
            "properties": {
                "required": ["ml-aoi:split"],
                "properties": {"ml-aoi:split": {"enum": ["train", "validate", "test"]}},
            }
        },
    },
}


@pytest.fixture
def offline_stac_validation() -> Callable[[], None]:
    """Make pystac validate offline: its bundled core schemas plus the ml-aoi extension's."""
    from pystac.validation import JsonSchemaSTACValidator, set_validator

    def install() -> None:
        validator = JsonSchemaSTACValidator()
        validator.schema_cache[str(ML_AOI_SCHEMA_DOC["$id"])] = ML_AOI_SCHEMA_DOC
        set_validator(validator)

    return install
