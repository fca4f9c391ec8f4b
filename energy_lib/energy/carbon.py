"""Carbon: emissions = energy x carbon intensity x PUE. No network look-ups.

Intensity comes, in order of preference, from an explicit value, a country's figure in the
bundled table (energy_lib/data/carbon_intensity_by_country.csv: CodeCarbon 3.3.2's per-country
`carbon_intensity` of codecarbon/data/private_infra/global_energy_mix.json, MIT, derived from Our
World in Data), or the world average. For a country alone (no region), CodeCarbon 3.3.2's
offline tracker uses that same figure (codecarbon/core/emissions.py,
Emissions.get_country_emissions); it uses regional data only when given a region (US states,
Canadian provinces, Chinese provinces, Nordic bidding zones), which we never pass it. When it
runs alongside (codecarbon_backend) it is given our figure anyway. `intensity_from_mix` computes
it from an energy mix when only the shares of each source are known.

PUE multiplies emissions only: energies stay the IT equipment's. (CodeCarbon multiplies the
reported power and energy by its `pue` too; see codecarbon_backend and report.export.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..bundled import read_csv
from ..errors import ConfigError

#: World average (gCO2eq/kWh), IEA Global Energy & CO2 Status Report 2019: CodeCarbon 3.3.2's
#: `world_average` (codecarbon/data/private_infra/carbon_intensity_per_source.json), which it
#: uses for a country missing from its data (core/emissions.py, Emissions.get_country_emissions).
WORLD_AVERAGE_G_PER_KWH = 475.0

#: Life-cycle emission factors per source (gCO2eq/kWh), from CodeCarbon 3.3.2's
#: carbon_intensity_per_source.json (coal, petroleum, gas: energy-usage project; the rest: World
#: Nuclear Association's life-cycle comparison). A subset: that file also lists fossil (635,
#: EPA eGRID) and biomass, biofuel and waste (230, IPCC AR5), which this table does not accept.
SOURCE_G_PER_KWH = {
    "coal": 995.0, "petroleum": 816.0, "natural_gas": 743.0, "geothermal": 38.0,
    "hydroelectricity": 26.0, "nuclear": 29.0, "solar": 48.0, "wind": 26.0,
}


@dataclass(frozen=True)
class CarbonIntensity:
    g_per_kwh: float
    source: str  # "explicit", "country table (OWID via CodeCarbon, <year>)", "world average"
    country_iso_code: str = ""
    country_name: str = ""


@lru_cache(maxsize=1)
def country_table() -> dict[str, tuple[str, float, str]]:
    """ISO 3166-1 alpha-3 -> (country name, gCO2eq/kWh, data year)."""
    rows = read_csv("carbon_intensity_by_country.csv")
    return {r["iso_code"]: (r["country_name"], float(r["carbon_intensity_g_per_kwh"]), r["year"])
            for r in rows}


def check_country(code: str) -> str:
    """Upper-cased ISO alpha-3 code, or a ConfigError saying how to find valid codes."""
    upper = code.strip().upper()
    if upper and upper not in country_table():
        raise ConfigError(f"country={code!r} is not a known ISO 3166-1 alpha-3 code; valid codes "
                          "are listed in energy_lib/data/carbon_intensity_by_country.csv "
                          "(e.g. FRA, DEU, USA, GBR)")
    return upper


def intensity_from_mix(shares: dict[str, float]) -> float:
    """gCO2eq/kWh of an energy mix given each source's share (fractions or percentages; they
    are normalised). 25 % coal, 35 % petroleum, 26 % gas and 14 % nuclear give 731.59."""
    unknown = sorted(set(shares) - set(SOURCE_G_PER_KWH))
    if unknown:
        raise ConfigError(f"energy mix source(s) {', '.join(unknown)} unknown; allowed: "
                          f"{', '.join(SOURCE_G_PER_KWH)}")
    if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ConfigError(f"energy mix shares {shares} must be >= 0 and sum to more than 0")
    total = sum(shares.values())
    return sum(SOURCE_G_PER_KWH[s] * v for s, v in shares.items()) / total


def resolve_intensity(country: str = "", explicit_g_per_kwh: float | None = None) -> CarbonIntensity:
    if explicit_g_per_kwh is not None:
        if not explicit_g_per_kwh >= 0:
            raise ConfigError(f"carbon_intensity_g_per_kwh={explicit_g_per_kwh!r} must be >= 0")
        return CarbonIntensity(float(explicit_g_per_kwh), "explicit", check_country(country))
    code = check_country(country)
    if code:
        name, value, year = country_table()[code]
        return CarbonIntensity(value, f"country table (Our World in Data via CodeCarbon, {year})",
                               code, name)
    return CarbonIntensity(WORLD_AVERAGE_G_PER_KWH, "world average (IEA 2019)")


def emissions_kg(energy_kwh: float, intensity_g_per_kwh: float, pue: float = 1.0) -> float:
    """kgCO2eq of `energy_kwh` drawn by the IT equipment, in a facility of `pue`."""
    if not pue > 0:
        raise ConfigError(f"pue={pue!r} must be > 0 (1.0 = no facility overhead)")
    return energy_kwh * pue * intensity_g_per_kwh / 1000.0
