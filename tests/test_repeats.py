"""Study files with repeats, a compared axis and a target accuracy; the study-level statistics
of the report on a hand-made set of runs with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from energy_lib import StudyError
from energy_lib.cli import main
from energy_lib.report.repeats import repeats_text, study_statistics
from energy_lib.study import load_study

STUDY = """\
[study]
name = "rep"
{meta}
[fixed]
dataset = "fashion_mnist"
seed = 5
[axes]
width = [0.5, 1]
precision = ["fp32", "amp"]
"""


def study_file(tmp_path, meta: str = "repeats = 3", **replace):
    text = STUDY.format(meta=meta)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "rep.toml"
    path.write_text(text)
    return path


def test_repeats_add_a_seed_axis_from_the_fixed_seed(tmp_path):
    study = load_study(study_file(tmp_path, 'repeats = 3\ncompare = "precision"\ntarget_acc_pct = 60'))
    assert len(study.cells) == 12 and study.repeats == 3
    assert study.axes["seed"] == [5, 6, 7] and "seed" not in study.fixed
    first_setting = [c for c in study.cells if c.name.startswith("width-0.5_precision-fp32_")]
    assert [c.name for c in first_setting] == [
        "width-0.5_precision-fp32_seed-5", "width-0.5_precision-fp32_seed-6",
        "width-0.5_precision-fp32_seed-7"]
    assert [c.config.seed for c in study.cells[::4]] == [5, 6, 7]  # seed-major: 4 settings each
    assert study.setting_axes == ["width", "precision"]
    assert study.compare == "precision" and study.target_acc_pct == 60.0


def test_one_repeat_keeps_the_old_cell_names(tmp_path):
    study = load_study(study_file(tmp_path, ""))
    assert [c.name for c in study.cells][:1] == ["width-0.5_precision-fp32"]
    assert study.repeats == 1 and study.compared_axis == "precision"


@pytest.mark.parametrize("meta,message", [
    ("repeats = 0", "repeats=0 is not allowed; use a whole number >= 1"),
    ("repeats = 2.5", "repeats=2.5 is not allowed"),
    ("repeats = true", "repeats=True is not allowed"),
    ('compare = "seed"', "compare='seed' is not allowed; it must name an axis with exactly two values"),
    ('compare = "depth"', "compare='depth' is not allowed"),
    ("target_acc_pct = 0", "target_acc_pct=0 is not allowed; use a percentage in (0, 100]"),
    ("target_acc_pct = 100.5", "target_acc_pct=100.5 is not allowed"),
])
def test_bad_analysis_settings_are_one_line_errors(tmp_path, meta, message, capsys):
    path = study_file(tmp_path, meta)
    with pytest.raises(StudyError, match=message.split(";")[0].replace("(", r"\(").replace(")", r"\)")):
        load_study(path)
    assert main(["list", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()


def test_repeats_and_a_seed_axis_are_refused(tmp_path):
    path = study_file(tmp_path, "repeats = 2", **{'precision = ["fp32", "amp"]': "seed = [1, 2]"})
    with pytest.raises(StudyError, match="'seed' is an axis and repeats = 2"):
        load_study(path)


def test_repeats_count_against_the_grid_limit(tmp_path):
    path = study_file(tmp_path, "repeats = 3")
    with pytest.raises(StudyError, match="12 cells"):
        load_study(path, max_cells=10)


def runs_table() -> pd.DataFrame:
    """Two widths x two precisions x three seeds; amp uses exactly 0.8 x fp32's energy at width
    1 and the same at width 0.5; one amp repeat failed."""
    rows = []
    for width in (0.5, 1.0):
        for seed in (0, 1, 2):
            fp32_j = 1000.0 * width * (1 + 0.1 * seed)
            for precision, energy in (("fp32", fp32_j), ("amp", fp32_j * (0.8 if width == 1 else 1.0))):
                failed = width == 0.5 and precision == "amp" and seed == 2
                rows.append({"cell": f"w{width}_{precision}_s{seed}", "width": width,
                             "precision": precision, "seed": seed,
                             "status": "failed" if failed else "ok",
                             "best_val_acc_pct": 70.0 + 10 * width + seed,
                             "final_val_acc_pct": 69.0 + 10 * width + seed,
                             "energy_j": math.nan if failed else energy,
                             "constant_power_energy_j": energy, "total_s": energy / 50,
                             "acc_pct_per_wh": 1.0, "energy_kind": "modelled"})
    return pd.DataFrame(rows)


def test_study_statistics_on_known_runs(tmp_path):
    study = load_study(study_file(tmp_path, 'repeats = 3\ncompare = "precision"'))
    result = study_statistics(runs_table(), pd.DataFrame(), study)
    summary = result["summary"].set_index(["width", "precision"])
    assert summary.loc[(1.0, "fp32"), "energy_j_n"] == 3
    assert summary.loc[(0.5, "amp"), "energy_j_n"] == 2 and summary.loc[(0.5, "amp"), "failed"] == 1
    # energy is positive: its centre is the geometric mean of 1000, 1100, 1200
    assert summary.loc[(1.0, "fp32"), "energy_j_mean"] == pytest.approx((1000 * 1100 * 1200) ** (1 / 3))
    assert summary.loc[(1.0, "fp32"), "best_val_acc_pct_mean"] == pytest.approx(81.0)  # linear
    assert summary["pareto"].dtype == bool
    paired = result["paired"]
    energy = paired[paired["value"] == "energy_j"].set_index("width")
    assert energy.loc[1.0, "ratio"] == pytest.approx(0.8) and energy.loc[1.0, "n"] == 3
    assert "saves 20.0 %" in energy.loc[1.0, "verdict"]
    assert energy.loc[0.5, "ratio"] == pytest.approx(1.0) and energy.loc[0.5, "n"] == 2
    assert energy.loc[0.5, "unpaired"] == 1
    claims = result["claims"].set_index("id")
    assert len(claims) == 4 and set(claims["verdict"]) <= {
        "supported", "contradicted", "not testable here", "inconclusive"}


def test_a_written_out_seed_axis_counts_as_repeats(tmp_path):
    path = study_file(tmp_path, "", **{'width = [0.5, 1]': "seed = [0, 1, 2]", "seed = 5\n": ""})
    study = load_study(path)
    assert study.repeats == 1 and study.setting_axes == ["precision"]
    table = runs_table()
    table = table[table["width"] == 1.0]
    result = study_statistics(table, pd.DataFrame(), study)
    energy = result["paired"][result["paired"]["value"] == "energy_j"].iloc[0]
    assert energy["ratio"] == pytest.approx(0.8) and energy["n"] == 3


def test_the_repeats_header_comes_from_the_records(tmp_path):
    study = load_study(study_file(tmp_path, 'repeats = 3\ncompare = "precision"'))
    summary = study_statistics(runs_table(), pd.DataFrame(), study)["summary"]
    assert repeats_text(study, summary) == (
        "the study asks for 3 repeats per setting; 2 to 3 per setting are compared (finished, "
        "uncontended) (2 repeats: intervals are wide)")
    full = summary.assign(best_val_acc_pct_n=3)
    assert repeats_text(study, full) == "repeats per setting: 3"
    assert "none is compared yet" in repeats_text(study, summary.iloc[0:0])
