"""A wheel built from the repository ships its recipes and provider profiles.

The wheel is built from a copy of the sources (the build leaves ``build/`` and ``*.egg-info``
behind, which must not land in the checkout), installed without dependencies into a fresh
virtual environment that borrows the project environment's packages through a ``.pth`` line
(nothing is downloaded), and asked, from an unrelated folder, for every recipe by name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from harvest.backends.profiles import known_profiles
from harvest.recipes import recipe_names

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import json, harvest
from harvest.recipes import load_recipe, recipe_names
from harvest.backends.profiles import known_profiles, load_profile
names = recipe_names()
print(json.dumps({
    "file": harvest.__file__,
    "recipes": {n: load_recipe(n).name for n in names},
    "profiles": {n: load_profile(n).name for n in known_profiles()},
}))
"""


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("harvest", "degradation"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("harvest_eo-*.whl")
    return wheel


@pytest.mark.slow
def test_a_wheel_install_lists_and_loads_every_shipped_recipe(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The project environment's own pip installs the wheel into the fresh environment.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
        + ["--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Dependencies come from the project environment, appended after the wheel's own folder
    # (a path listed in a .pth file is not scanned for .pth files: the checkout's editable
    # install stays out).
    (site / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [str(python), "-c", CHECK],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(site), found["file"]
    assert found["recipes"] == {n: n for n in recipe_names()}
    assert set(found["recipes"]) >= {"sen2naip", "sen2venus", "sen12"}
    assert found["profiles"] == {n: n for n in known_profiles()}
