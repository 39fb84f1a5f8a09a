from __future__ import annotations

from pathlib import Path

import pytest

from harvest.config import CONFIG_DIR, Recipe, config_hash, load_model, load_recipe
from harvest.errors import ConfigError

ALL_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.stem for p in ALL_CONFIGS} >= {"sen2naip", "sen2venus", "sen12"}


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_loads(path: Path) -> None:
    kind = path.parent.name
    assert kind in ("recipes", "providers"), f"no loader known for configs/{kind}: add one"
    if kind == "providers":
        from harvest.catalog.profiles import ProviderProfile

        profile = load_model(ProviderProfile, path)
        assert profile.name == path.stem
        # Every provider serves Sentinel-2 L2A, the LR side of every recipe.
        assert profile.collection("sentinel-2-l2a").bands["B04"].asset
        return
    recipe = load_model(Recipe, path)
    assert recipe.name == path.stem
    # Nested grids: every group covers the same footprint.
    assert recipe.hr.chip_side_m == pytest.approx(recipe.lr.chip_side_m, abs=0.01)


def test_sen2naip_numbers_follow_the_paper() -> None:
    r = load_recipe("sen2naip")
    assert (r.lr.chip_px, r.lr.gsd_m, r.hr.chip_px, r.hr.gsd_m) == (121, 10, 484, 2.5)
    assert r.lr.bands == ("B04", "B03", "B02", "B08")
    assert r.pairing.max_dt_days == 1
    assert r.hr_min_year == 2011


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "recipes" / "sen2naip.yaml").read_text() + "\nmax_clouds: 3\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="unknown key 'max_clouds'"):
        load_recipe(str(bad))


def test_chip_footprints_must_nest(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "recipes" / "sen2naip.yaml").read_text().replace("484", "480")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="1200 m wide but the LR chip is 1210 m"):
        load_recipe(str(bad))


def test_unknown_recipe_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="sen2naip"):
        load_recipe("no-such-recipe")


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nlr: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_recipe(str(bad))


def test_config_hash_is_stable_and_content_sensitive() -> None:
    a = load_recipe("sen2naip")
    b = load_recipe("sen2naip")
    assert config_hash(a) == config_hash(b)
    c = a.model_copy(update={"max_scene_cloud_pct": 10.0})
    assert config_hash(c) != config_hash(a)
