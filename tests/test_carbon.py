"""Carbon: intensity from an energy mix, the bundled country table, the world average, an explicit
value, emissions = kWh x intensity x PUE, and the RunConfig rules of the energy fields."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import energy_lib
from energy_lib import ConfigError, RunConfig
from energy_lib.config import METER_NAMES
from energy_lib.energy.carbon import (SOURCE_G_PER_KWH, WORLD_AVERAGE_G_PER_KWH, check_country,
                                      country_table, emissions_kg, intensity_from_mix,
                                      resolve_intensity)

TABLE_CSV = Path(energy_lib.__file__).parent / "data" / "carbon_intensity_by_country.csv"


def csv_rows() -> dict[str, dict]:
    with open(TABLE_CSV) as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return {row["iso_code"]: row for row in csv.DictReader(lines)}


# ------------------------------------------------------------------------------------------
# Intensity
# ------------------------------------------------------------------------------------------

def test_intensity_from_mix_percentages():
    mix = {"coal": 25, "petroleum": 35, "natural_gas": 26, "nuclear": 14}
    assert intensity_from_mix(mix) == pytest.approx(731.59, abs=1e-9)


def test_intensity_from_mix_fractions_give_the_same():
    mix = {"coal": 0.25, "petroleum": 0.35, "natural_gas": 0.26, "nuclear": 0.14}
    assert intensity_from_mix(mix) == pytest.approx(731.59, abs=1e-9)


def test_intensity_from_mix_single_source_and_normalisation():
    assert intensity_from_mix({"wind": 3}) == pytest.approx(26.0)
    assert intensity_from_mix({"coal": 1, "solar": 1}) == pytest.approx((995 + 48) / 2)
    assert intensity_from_mix({"coal": 1, "solar": 0}) == pytest.approx(995.0)


def test_intensity_from_mix_unknown_source():
    with pytest.raises(ConfigError, match="biomass") as error:
        intensity_from_mix({"coal": 50, "biomass": 50})
    for source in SOURCE_G_PER_KWH:
        assert source in str(error.value)


@pytest.mark.parametrize("mix", [{}, {"coal": 0}, {"coal": -1, "wind": 2}])
def test_intensity_from_mix_bad_shares(mix):
    with pytest.raises(ConfigError):
        intensity_from_mix(mix)


def test_resolve_intensity_country_from_table():
    row = csv_rows()["FRA"]
    got = resolve_intensity("fra")
    assert got.g_per_kwh == float(row["carbon_intensity_g_per_kwh"])
    assert got.country_iso_code == "FRA" and got.country_name == row["country_name"] == "France"
    assert "country table" in got.source and row["year"] in got.source


def test_country_table_matches_the_csv():
    rows = csv_rows()
    table = country_table()
    assert len(table) == len(rows) > 100
    assert table["USA"] == (rows["USA"]["country_name"],
                            float(rows["USA"]["carbon_intensity_g_per_kwh"]), rows["USA"]["year"])


def test_resolve_intensity_world_average():
    got = resolve_intensity()
    assert got.g_per_kwh == WORLD_AVERAGE_G_PER_KWH == 475.0
    assert got.country_iso_code == "" and got.country_name == "" and "world average" in got.source
    assert resolve_intensity("  ").g_per_kwh == 475.0


def test_explicit_intensity_wins():
    got = resolve_intensity("FRA", 123.0)
    assert got.g_per_kwh == 123.0 and got.source == "explicit" and got.country_iso_code == "FRA"
    assert resolve_intensity("", 0.0).g_per_kwh == 0.0


def test_explicit_intensity_negative_and_country_unknown():
    with pytest.raises(ConfigError):
        resolve_intensity("", -1.0)
    with pytest.raises(ConfigError):
        resolve_intensity("XXX", 100.0)  # the country is still checked


def test_check_country():
    assert check_country(" deu ") == "DEU"
    assert check_country("") == ""
    with pytest.raises(ConfigError, match="carbon_intensity_by_country.csv"):
        check_country("Germany")


# ------------------------------------------------------------------------------------------
# Emissions
# ------------------------------------------------------------------------------------------

def test_emissions_hand_computed():
    assert emissions_kg(2.0, 400.0, 1.5) == pytest.approx(1.2)
    assert emissions_kg(2.0, 400.0) == pytest.approx(0.8)
    assert emissions_kg(0.0, 400.0, 1.2) == 0.0
    assert emissions_kg(1.0, 475.0) == pytest.approx(0.475)


@pytest.mark.parametrize("pue", [0, -1.0])
def test_emissions_pue_must_be_positive(pue):
    with pytest.raises(ConfigError, match="pue"):
        emissions_kg(1.0, 400.0, pue)


# ------------------------------------------------------------------------------------------
# RunConfig rules of the energy fields
# ------------------------------------------------------------------------------------------

def test_unknown_country_in_config_says_where_codes_are():
    with pytest.raises(ConfigError) as error:
        RunConfig(country="XXX")
    message = str(error.value)
    assert "XXX" in message and "carbon_intensity_by_country.csv" in message


def test_lowercase_country_is_normalised():
    assert RunConfig(country="fra").country == "FRA"
    assert RunConfig(country="").country == ""


def test_energy_defaults_are_valid():
    config = RunConfig()
    assert config.meters == "auto" and config.pue == 1.0 and config.country == ""
    assert config.cpu_tdp_w is None and config.ram_power_w is None
    assert config.carbon_intensity_g_per_kwh is None
    assert 0 < config.sample_period_s <= 1 and config.idle_s >= 0


@pytest.mark.parametrize("field,value", [
    ("pue", 0), ("pue", -1.2), ("cpu_tdp_w", 0), ("cpu_tdp_w", -65), ("ram_power_w", -1),
    ("idle_s", -0.5), ("sample_period_s", 0), ("sample_period_s", 1.5),
    ("sample_period_s", -0.1), ("carbon_intensity_g_per_kwh", -5)])
def test_bad_energy_values_are_named(field, value):
    with pytest.raises(ConfigError) as error:
        RunConfig(**{field: value})
    assert field in str(error.value) and repr(float(value)) in str(error.value)


@pytest.mark.parametrize("field,value", [
    ("pue", 1.58), ("cpu_tdp_w", 65), ("ram_power_w", 3.0), ("idle_s", 0), ("idle_s", 2.5),
    ("sample_period_s", 1), ("sample_period_s", 0.05), ("carbon_intensity_g_per_kwh", 0)])
def test_good_energy_values(field, value):
    assert getattr(RunConfig(**{field: value}), field) == value


@pytest.mark.parametrize("meters", ["foo", "rapl,foo", "", " , ", "RAPL"])
def test_bad_meter_names_list_the_allowed(meters):
    with pytest.raises(ConfigError) as error:
        RunConfig(meters=meters)
    message = str(error.value)
    assert "meters=" in message
    for name in METER_NAMES:
        assert name in message


@pytest.mark.parametrize("meters", ["rapl,ram-model", "auto", "nvml", " rapl , cpu-model ",
                                    "constant-power"])
def test_good_meter_names(meters):
    assert RunConfig(meters=meters).meters == meters.strip()  # pasted whitespace trimmed


def test_energy_fields_through_from_dict():
    config = RunConfig.from_dict({"country": "deu", "pue": 1.2, "meters": "rapl,ram-model",
                                  "cpu_tdp_w": 65, "ram_power_w": None})
    assert config.country == "DEU" and config.cpu_tdp_w == 65.0
    assert isinstance(config.cpu_tdp_w, float)
    with pytest.raises(ConfigError, match="cpu_tdp_w"):
        RunConfig.from_dict({"cpu_tdp_w": "65"})


# ------------------------------------------------------------------------------------------
# Against the installed CodeCarbon: the figures its offline tracker would use for a country
# ------------------------------------------------------------------------------------------

def codecarbon_data_source():
    """CodeCarbon's DataSource, when the installed version is the one the bundled table was taken
    from (its header names it); skipped otherwise -- a newer CodeCarbon may have newer data, and
    it is given our figure anyway (codecarbon_backend)."""
    from energy_lib.energy.codecarbon_backend import _hide_broken_amdsmi

    _hide_broken_amdsmi()
    codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")
    header = TABLE_CSV.read_text().splitlines()[1]
    if f"CodeCarbon {codecarbon.__version__}," not in header:
        pytest.skip(f"the table is from another CodeCarbon than {codecarbon.__version__}: {header}")
    from codecarbon.input import DataSource

    return DataSource()


def test_country_table_is_codecarbons_country_data():
    mix = codecarbon_data_source().get_global_energy_mix_data()
    table = country_table()
    assert set(table) == set(mix)
    for code, (name, value, year) in table.items():
        assert (name, value, year) == (mix[code]["country_name"], mix[code]["carbon_intensity"],
                                       str(mix[code]["year"])), code


def test_world_average_and_sources_are_codecarbons():
    per_source = codecarbon_data_source().get_carbon_intensity_per_source_data()
    assert WORLD_AVERAGE_G_PER_KWH == per_source["world_average"]
    for source, value in SOURCE_G_PER_KWH.items():
        assert value == per_source[source], source
