"""Build configs (`harvest build CONFIG [--set key=value]`): validation, overrides, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harvest.config import BuildConfig, load_build_config, parse_set
from harvest.errors import ConfigError, HarvestError
from harvest.recipes import load_recipe

REPO = Path(__file__).resolve().parents[2]
BUILDS = sorted((REPO / "configs" / "builds").glob("*.yaml"))
RECIPES = ("sen2naip-cross-sensor", "sen2naip-synthetic", "sen2venus", "sentinel-hr", "sen12")


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, HarvestError)
    return msg


@pytest.mark.parametrize("path", BUILDS, ids=lambda p: p.stem)
def test_every_shipped_build_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the configs' relative paths are relative to where harvest runs
    config = load_build_config(path.relative_to(REPO))
    load_recipe(config.recipe)
    # Relative paths become absolute from where harvest runs (config.yaml means the same later).
    assert config.output == REPO / yaml.safe_load(path.read_text())["output"]
    if path.stem.startswith("demo"):
        assert config.catalog.source == "demo" and config.region == "demo-world"
    else:
        assert config.catalog.source != "demo"


def test_every_recipe_has_a_build_config_and_a_demo_twin() -> None:
    names = {p.stem for p in BUILDS}
    for name in RECIPES:
        assert name in names and f"demo-{name}" in names, name
    assert "demo" in names  # what `make demo` builds


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


BASE: dict[str, object] = {
    "recipe": "sen2naip",
    "catalog": "demo",
    "region": "demo-world",
    "n": 4,
    "output": "out",
}


def test_overrides_use_dotted_keys_and_yaml_values(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "prune": {"clusters": 2, "model": "demo"}})
    config = load_build_config(
        path,
        [
            "n=500",
            "output=/data/ds",
            "prune.clusters=10",
            "qa.max_sam_deg=1.5",
            "catalog.timeout_s=5",
            "start=2020-01-01",
            "products=[cross-sensor, synthetic]",
        ],
    )
    assert config.n == 500 and config.output == Path("/data/ds")
    assert load_build_config(path).output == Path.cwd() / "out"
    assert config.prune is not None and config.prune.clusters == 10
    assert config.prune.model == "demo"  # the rest of the mapping stays
    assert config.qa.max_sam_deg == 1.5 and config.catalog.timeout_s == 5
    assert config.catalog.source == "demo"  # the string shorthand became a mapping
    assert str(config.start) == "2020-01-01"
    assert config.products == ("cross-sensor", "synthetic")


def test_the_hash_ignores_compute_keys_only(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    base = load_build_config(path).dataset_hash()
    assert load_build_config(path, ["workers=4"]).dataset_hash() == base
    assert load_build_config(path, ["scheduler=tcp://127.0.0.1:8786"]).dataset_hash() == base
    assert load_build_config(path, ["n=5"]).dataset_hash() != base
    assert load_build_config(path, ["qa.max_shift_px=0.5"]).dataset_hash() != base


@pytest.mark.parametrize(
    ("change", "overrides", "expected"),
    [
        ({"nn": 3}, [], "unknown key 'nn'"),
        ({"qa": {"max_shif_px": 1}}, [], "unknown key 'qa.max_shif_px'"),
        ({"n": "many"}, [], "n: "),
        ({"n": 0}, [], "n: "),
        ({"workers": 0}, [], "workers: "),
        ({"products": ["cross-sensor", "synthetic"], "recipe": "sen12"}, [], "use recipe sen2naip"),
        ({"products": ["sentinel-hr"]}, [], "made with recipe sentinel-hr"),
        ({"products": ["sentinel-hr"], "recipe": "sentinel-hr"}, [], "remove n and rois"),
        (
            {"products": ["sentinel-hr", "sen2venus"], "recipe": "sentinel-hr", "n": None},
            [],
            "a product of its own",
        ),
        ({"sentinel_hr": {"ratio": 1}}, [], "sentinel_hr.ratio"),
        ({"start": "2022-01-01", "end": "2021-01-01"}, [], "is after end"),
        ({"catalog": "planetary-computer"}, [], "region demo-world needs catalog demo"),
        ({}, ["n"], "write KEY=VALUE"),
        ({}, ["=3"], "write KEY=VALUE"),
        ({}, ["qa.bogus=1"], "unknown key 'qa.bogus'"),
        ({}, ["n.deep=1"], "n is not a mapping"),
        ({"rois": "nowhere.parquet"}, [], "rois names nowhere.parquet, which does not exist"),
        ({"region": "missing.geojson"}, [], "region names missing.geojson"),
        ({"recipe": "my-recipe.yaml", "region": "conus", "catalog": "demo"}, [], "recipe names"),
        (
            {"prune": {"clusters": 2, "checkpoint": "no.pt"}},
            [],
            "prune.checkpoint names no.pt",
        ),
    ],
)
def test_bad_configs_are_one_line_errors_naming_the_key_or_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, object],
    overrides: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, {**BASE, **change})
    with pytest.raises(ConfigError) as exc:
        load_build_config(path, overrides)
    assert expected in one_line(exc)


def test_missing_n_and_rois_and_bad_files(tmp_path: Path) -> None:
    data = {k: v for k, v in BASE.items() if k != "n"}
    with pytest.raises(ConfigError, match="give n"):
        load_build_config(write(tmp_path, data))
    with pytest.raises(ConfigError, match="does not exist"):
        load_build_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_build_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_build_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_build_config(bad)


def test_parse_set_keeps_text_that_is_not_yaml() -> None:
    assert parse_set(["a.b=1", "c=x: y: z", "d="]) == [
        (["a", "b"], 1),
        (["c"], "x: y: z"),
        (["d"], ""),
    ]


def test_models_are_frozen_and_strict() -> None:
    config = BuildConfig.model_validate(BASE)
    with pytest.raises(ValueError):
        config.n = 3  # type: ignore[misc]
    assert config.prune_product() == "cross-sensor"
    synthetic = BuildConfig.model_validate(
        {**BASE, "products": ["synthetic"], "prune": {"clusters": 2}}
    )
    assert synthetic.prune_product() == "synthetic"
