from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from harvest.backends.profiles import PROVIDER_DIR, ProviderProfile, known_profiles
from harvest.config import config_hash, load_model
from harvest.errors import ConfigError
from harvest.recipes import Check, Layout, Recipe, SensorKind, load_recipe, recipe_names

REPO = Path(__file__).resolve().parents[2]
RECIPE_DIR = Path(str(resources.files("harvest.recipes")))


def _sen2naip_text() -> str:
    return (RECIPE_DIR / "sen2naip.yaml").read_text()


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sen2naip_dict() -> dict:
    return yaml.safe_load(_sen2naip_text())


def test_there_are_recipes_and_profiles() -> None:
    assert set(recipe_names()) >= {"sen2naip", "sen2venus", "sen12"}
    assert set(known_profiles()) >= {"demo", "earth-engine", "earth-search", "planetary-computer"}


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_loads_by_name_and_by_path(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert load_recipe(RECIPE_DIR / f"{name}.yaml") == recipe
    assert load_recipe(str(RECIPE_DIR / f"{name}.yaml")) == recipe
    # Nested grids: every group of every sensor covers the same footprint.
    for _, sensor in recipe.sensors():
        for group in sensor.groups:
            assert group.chip_side_m == pytest.approx(recipe.lr.chip_side_m, abs=0.01)
    assert recipe.writer in set(Layout)


@pytest.mark.parametrize("name", known_profiles())
def test_every_shipped_provider_profile_loads(name: str) -> None:
    profile = load_model(ProviderProfile, PROVIDER_DIR / f"{name}.yaml")
    assert profile.name == name
    # Every provider serves Sentinel-2 L2A, the LR side of every recipe.
    assert profile.collection("sentinel-2-l2a").bands["B04"].asset


def test_every_file_left_in_configs_has_a_loader() -> None:
    # Recipes and provider profiles are package data now; any config added under configs/
    # (build configs, say) must be loaded here too.
    loaders = {"recipes": Recipe, "providers": ProviderProfile}
    found = sorted((REPO / "configs").rglob("*.yaml"))
    for path in found:
        kind = path.relative_to(REPO / "configs").parts[0]
        if kind == "builds":
            continue  # tests/unit/test_build_config.py loads every build config
        assert kind in loaders, f"no loader known for configs/{kind}: add one to this test"
        load_model(loaders[kind], path)
    assert any(p.parent.name == "builds" for p in found)


def test_sen2naip_numbers_follow_the_paper() -> None:
    r = load_recipe("sen2naip")
    assert (r.lr.chip_px, r.lr.gsd_m, r.hr.chip_px, r.hr.gsd_m) == (121, 10, 484, 2.5)
    assert r.lr.bands == ("B04", "B03", "B02", "B08")
    assert r.pairing.max_dt_days == 1
    assert r.hr_min_year == 2011
    assert r.writer is Layout.SEN2NAIP_CROSS_SENSOR
    assert r.qa.correspondence == {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir"}


def test_sen2venus_and_sen12_describe_their_groups_and_checks() -> None:
    venus = load_recipe("sen2venus")
    assert [(g.name, g.gsd_m, g.chip_px) for g in venus.lr.groups] == [
        ("10m", 10, 128),
        ("20m", 20, 64),
    ]
    assert [(g.name, g.gsd_m, g.chip_px) for g in venus.hr.groups] == [("5m", 5, 256)]
    # Spectral QA between corresponding bands: S2 B02/B03/B04/B08 <-> VENuS B3/B4/B7/B11.
    assert [venus.qa.correspondence[b] for b in ("B02", "B03", "B04", "B08")] == [
        "B3",
        "B4",
        "B7",
        "B11",
    ]
    sen12 = load_recipe("sen12")
    assert sen12.lr.kind is SensorKind.SAR and sen12.hr.cloud_mask == "SCL"
    assert not sen12.qa.correspondence
    assert Check.BACKSCATTER_RANGE in sen12.qa.checks and Check.SPECTRAL not in sen12.qa.checks


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(_sen2naip_text() + "\nmax_clouds: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'max_clouds'"):
        load_recipe(str(bad))


def test_chip_footprints_must_nest(tmp_path: Path) -> None:
    text = _sen2naip_text().replace("484", "480")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="1200 m wide but the LR chip is 1210 m") as err:
        load_recipe(str(bad))
    assert "\n" not in str(err.value)


def test_groups_nest_exactly_not_nearly(tmp_path: Path) -> None:
    # 64 px at 20.001 m is 6.4 cm off the 10 m group's 1280 m chip: an error, as is any
    # difference (groups nest exactly, in whole millimetres).
    data = yaml.safe_load((RECIPE_DIR / "sen2venus.yaml").read_text())
    data["lr"]["groups"][1]["gsd_m"] = 20.001
    with pytest.raises(ConfigError, match=r"lr group 20m is 1280.06 m wide"):
        load_recipe(_write(tmp_path, data))


def test_unknown_correspondence_band_is_named(tmp_path: Path) -> None:
    data = _sen2naip_dict()
    data["qa"]["correspondence"]["B08"] = "swir"
    with pytest.raises(ConfigError, match="maps B08 to HR band swir, which no hr group reads"):
        load_recipe(_write(tmp_path, data))
    data = _sen2naip_dict()
    data["qa"]["correspondence"]["B12"] = "nir"
    with pytest.raises(ConfigError, match="LR band B12, which no lr group reads") as err:
        load_recipe(_write(tmp_path, data))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["lr"].update(kind="sar"), "SAR sensor has no cloud mask"),
        (lambda d: d["qa"].pop("correspondence"), "check shift needs a band correspondence"),
        (lambda d: d["qa"]["checks"].append("backscatter_range"), "needs a SAR sensor"),
        (lambda d: d["qa"]["checks"].append("nodata"), "check nodata is listed twice"),
        (lambda d: d["qa"]["checks"].append("sharpness"), "qa.checks.7: Input should be"),
        (lambda d: d.update(writer="sen2venus-pt"), "writer: Input should be"),
        (lambda d: d["lr"]["groups"][0].update(name="Rgb Nir"), "should match pattern"),
        (lambda d: d["hr"]["groups"][0].update(gsd_m=2.5004), "not a whole number of millimetres"),
        (lambda d: d["lr"]["groups"].append(dict(d["lr"]["groups"][0])), "used twice"),
        (lambda d: d.update(guide=d["hr"]), "a guide sensor and series come together"),
        (
            lambda d: d.update(series={"guide_revisit_days": 20, "target_ratio": 5}),
            "a guide sensor and series come together",
        ),
        (
            lambda d: d.update(guide=d["hr"], series={"guide_revisit_days": 0, "target_ratio": 5}),
            "series.guide_revisit_days",
        ),
    ],
)
def test_recipe_mistakes_are_one_line_errors(tmp_path: Path, edit, message: str) -> None:
    data = _sen2naip_dict()
    edit(data)
    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(_write(tmp_path, data))
    assert "\n" not in str(err.value)


def test_sar_checks_need_no_correspondence(tmp_path: Path) -> None:
    data = yaml.safe_load((RECIPE_DIR / "sen12.yaml").read_text())
    data["qa"]["correspondence"] = {"VV": "B04"}
    with pytest.raises(ConfigError, match="pairs a SAR sensor's bands"):
        load_recipe(_write(tmp_path, data))


def test_unknown_recipe_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="sen2naip") as err:
        load_recipe("no-such-recipe")
    assert "sen12, sen2naip, sen2venus" in str(err.value)


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


def test_a_recipe_round_trips_through_its_json_dump() -> None:
    # harvest qa rebuilds a folder's recipe from the dump fetch records in run.json.
    for name in recipe_names():
        recipe = load_recipe(name)
        again = Recipe.model_validate(recipe.model_dump(mode="json"))
        assert again == recipe and config_hash(again) == config_hash(recipe)
