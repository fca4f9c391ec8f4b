"""The CodeCarbon-style exports: one row per finished run, exact columns, units, empty fields
for what cannot be known, the two schemas (experiment-log, codecarbon3) and the
`energy-study export` command."""

from __future__ import annotations

import json

import math

import pandas as pd
import pytest

from conftest import fake_executed_notebook
from energy_lib import RunConfig
from energy_lib.cli import main
from energy_lib import ConfigError
from energy_lib.report import export as export_module
from energy_lib.report.export import (CODECARBON3_COLUMNS, EXPORT_COLUMNS, SCHEMAS,
                                      codecarbon3_columns, export_row, export_runs,
                                      installed_emissions_data_fields, is_export, write_export)
from energy_lib.records import read_runs

STUDY = "exportstudy"
UNKNOWABLE = ["region", "cloud_provider", "cloud_region", "codecarbon_version", "longitude",
              "latitude", "on_cloud", "eval_top5"]


#: The settings every test cell of this study shares (its study file and its records).
FIXED = {"dataset": "fashion_mnist", "train_subset": 512, "test_subset": 256, "epochs": 2,
         "width": 0.5, "batch_size": 64, "lr": 0.05, "device": "cpu", "download": False,
         "idle_s": 0.6, "country": "FRA", "pue": 1.2}


def config_record(cell: str, **changes) -> dict:
    return RunConfig.from_dict({"study": STUDY, "cell": cell, **FIXED, **changes}).to_dict()


def summary_record(**changes) -> dict:
    summary = {
        "status": "ok", "epochs_completed": 2, "best_val_acc_pct": 71.5,
        "final_val_acc_pct": 70.25, "final_train_loss": 0.91, "final_val_loss": 0.83,
        "train_s_total": 30.0, "eval_s_total": 10.0, "total_s": 40.0, "s_per_epoch": 20.0,
        "compute_dtype": "float32", "device_name": "cpu", "parameters": 27938,
        "assumed_power_w": 70.0, "pipeline": "tensor", "idle_s": 0.6,
    }
    summary.update(changes)
    return summary


def energy_record(cpu_j=1800.0, ram_j=360.0, constant_j=2800.0, gpu_j=None) -> list[dict]:
    """One train (30 s) and one eval (10 s) window; each total split 3:1 between them."""
    parts = [("cpu", "tdp-model", "modelled", cpu_j), ("ram", "ram-model", "modelled", ram_j),
             ("assumed-board", "constant-power", "modelled", constant_j)]
    if gpu_j is not None:
        parts.append(("gpu", "zeus-nvml", "measured", gpu_j))
    return [{"epoch": 1, "phase": phase, "component": c, "method": m, "kind": k,
             "energy_j": j * share, "duration_s": seconds, "flag": "", "above_idle_j": None}
            for phase, seconds, share in (("train", 30.0, 0.75), ("eval", 10.0, 0.25))
            for c, m, k, j in parts]


CARBON = {"intensity_g_per_kwh": 56.039, "pue": 1.2, "country_iso_code": "FRA",
          "country_name": "France",
          "source": "country table (Our World in Data via CodeCarbon, 2023)"}


def provenance_record(**changes) -> dict:
    return {"git_commit": "0" * 40, "git_dirty": False, "energy_lib_version": "0.3.0",
            "python_version": "3.11.2", "torch_version": "2.4.0", "cuda_version": None,
            "device": "cpu", "device_name": "cpu", "cpu_model": "AMD EPYC", "cpu_count": 2,
            "ram_total_gb": 25.3, "torch_threads": 2, "hostname": "box",
            "os": "Linux-6.1.0-x86_64-with-glibc2.36", "executable": "/usr/bin/python3",
            "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:45+00:00",
            "data_sources": {"train": "x", "test": "y"}, **changes}


def write_cell(folder, cell, *, summary=None, provenance=None, config=None, energy=None,
               meters=None, **kwargs):
    records = {"config": config or config_record(cell),
               "energy": energy or energy_record(), "carbon": CARBON,
               "timeline": {"samples": [{"t_s": 0.5, "component": "cpu", "power_w": 12.0,
                                         "method": "tdp-model (modelled)"}],
                            "marks": [{"t_s": 0.0, "label": "epoch 1"}]},
               "provenance": provenance or provenance_record()}
    if summary is not False:
        records["summary"] = summary or summary_record()
    if meters is not None:
        records["meters"] = meters
    return fake_executed_notebook(folder / f"{cell}.ipynb", records=records, **kwargs)


@pytest.fixture
def study_runs(tmp_path):
    folder = tmp_path / "runs" / STUDY
    write_cell(folder, "precision-fp32")
    write_cell(folder, "precision-amp", config=config_record("precision-amp", precision="amp"),
               summary=summary_record(status="diverged", final_val_acc_pct=None,
                                      final_val_loss=None, epochs_completed=1))
    write_cell(folder, "precision-bf16", exception=True, error=("RuntimeError", "boom"))
    write_cell(folder, "precision-gpu", summary=False, finished=False)  # incomplete
    write_cell(folder, "precision-cuda", summary=summary_record(device_name="Tesla T4"),
               energy=energy_record(gpu_j=7200.0),
               provenance=provenance_record(device="cuda:0", device_name="Tesla T4"))
    return folder


def by_cell(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["experiment_id"]: row for _, row in frame.iterrows()}


def test_columns_and_finished_runs_only(study_runs):
    frame = export_runs(read_runs(study_runs), STUDY)
    assert list(frame.columns) == EXPORT_COLUMNS
    assert sorted(frame["experiment_id"]) == ["precision-amp", "precision-cuda", "precision-fp32"]


def test_units_and_values(study_runs):
    row = by_cell(export_runs(read_runs(study_runs), STUDY))["precision-fp32"]
    assert row["duration"] == pytest.approx(40.0)  # train_s_total + eval_s_total
    assert row["cpu_energy"] == pytest.approx(1800.0 / 3.6e6)
    assert row["ram_energy"] == pytest.approx(360.0 / 3.6e6)
    assert row["energy_consumed"] == pytest.approx((1800.0 + 360.0) / 3.6e6)
    assert row["cpu_power"] == pytest.approx(1800.0 / 40.0)
    assert row["ram_power"] == pytest.approx(360.0 / 40.0)
    emissions = 2160.0 / 3.6e6 * 56.039 * 1.2 / 1000
    assert row["emissions"] == pytest.approx(emissions)
    assert row["emissions_rate"] == pytest.approx(emissions / 40.0)
    assert row["country_name"] == "France" and row["country_iso_code"] == "FRA"
    assert row["pue"] == 1.2
    assert row["project_name"] == STUDY and row["run_id"] == f"{STUDY}/precision-fp32"
    assert row["experiment_name"] == "precision-fp32"
    assert row["model"] == "paper_cnn width=0.5 fp32"
    assert row["dataset"] == "fashion_mnist" and row["epochs"] == 2 and row["batch_size"] == 64
    assert row["timestamp"] == "2026-01-01T00:00:45+00:00"
    assert row["os"].startswith("Linux") and row["python_version"] == "3.11.2"
    assert row["cpu_count"] == 2 and row["cpu_model"] == "AMD EPYC"
    assert row["ram_total_size"] == 25.3
    assert row["tracking_mode"] == "machine"
    assert row["gpu_count"] == 0
    assert row["train_loss"] == 0.91 and row["eval_loss"] == 0.83 and row["eval_top1"] == 70.25
    assert row["lr"] == 0.05


def test_unknowable_fields_are_empty(study_runs):
    row = by_cell(export_runs(read_runs(study_runs), STUDY))["precision-fp32"]
    for column in UNKNOWABLE + ["gpu_energy", "gpu_power", "gpu_model"]:
        assert row[column] is None or (isinstance(row[column], float) and math.isnan(row[column])), column


def test_gpu_run(study_runs):
    row = by_cell(export_runs(read_runs(study_runs), STUDY))["precision-cuda"]
    assert row["gpu_count"] == 1 and row["gpu_model"] == "Tesla T4"
    assert row["gpu_energy"] == pytest.approx(7200.0 / 3.6e6)
    assert row["gpu_power"] == pytest.approx(7200.0 / 40.0)
    assert row["energy_consumed"] == pytest.approx((7200.0 + 1800.0 + 360.0) / 3.6e6)


def test_diverged_run_is_exported_with_empty_eval(study_runs):
    row = by_cell(export_runs(read_runs(study_runs), STUDY))["precision-amp"]
    assert row["epochs"] == 1 and row["model"] == "paper_cnn width=0.5 amp"
    assert pd.isna(row["eval_top1"]) and pd.isna(row["eval_loss"])
    assert row["cpu_energy"] == pytest.approx(1800.0 / 3.6e6)


def test_write_export_reads_back(study_runs, tmp_path):
    path = write_export(read_runs(study_runs), STUDY, tmp_path / "out" / "log.csv")
    assert path == tmp_path / "out" / "log.csv"
    assert not list(path.parent.glob(".*.tmp"))
    frame = pd.read_csv(path)
    assert list(frame.columns) == EXPORT_COLUMNS and len(frame) == 3
    fp32 = frame.set_index("experiment_id").loc["precision-fp32"]
    for column in UNKNOWABLE + ["gpu_energy", "gpu_power", "gpu_model"]:
        assert pd.isna(fp32[column]), column
    assert fp32["cpu_energy"] == pytest.approx(1800.0 / 3.6e6)
    assert fp32["duration"] == pytest.approx(40.0)


def test_read_runs_carries_the_timeline(study_runs):
    runs = read_runs(study_runs)
    assert set(runs.timeline["cell"]) == {"precision-fp32", "precision-amp", "precision-bf16",
                                          "precision-gpu", "precision-cuda"}
    assert set(runs.timeline.columns) == {"cell", "t_s", "component", "power_w", "method"}
    assert (runs.timeline["power_w"] == 12.0).all()


def test_export_of_an_empty_folder(tmp_path):
    frame = export_runs(read_runs(tmp_path), STUDY)
    assert list(frame.columns) == EXPORT_COLUMNS and frame.empty
    path = write_export(read_runs(tmp_path), STUDY, tmp_path / "log.csv")
    assert list(pd.read_csv(path).columns) == EXPORT_COLUMNS


def study_toml(precisions: list[str], study_keys: str = "") -> str:
    """A study file whose cells match `config_record`'s settings (one place for them)."""
    fixed = "\n".join(f"{key} = {json.dumps(value)}" for key, value in FIXED.items())
    return (f'[study]\nname = "{STUDY}"\n{study_keys}\n[fixed]\n{fixed}\n'
            f"[axes]\nprecision = {json.dumps(precisions)}\n")


def write_study(tmp_path) -> object:
    study = tmp_path / f"{STUDY}.toml"
    study.write_text(study_toml(["fp32", "amp", "bf16"]))
    return study


def test_cli_export(study_runs, tmp_path, capsys):
    study = write_study(tmp_path)
    code = main(["export", str(study), "--runs-dir", str(tmp_path / "runs"),
                 "--report-dir", str(tmp_path / "report")])
    assert code == 0
    path = tmp_path / "report" / STUDY / "emissions_log.csv"
    assert path.is_file()
    out, err = capsys.readouterr()
    assert str(path) in out
    frame = pd.read_csv(path)
    assert list(frame.columns) == EXPORT_COLUMNS
    # precision-gpu and precision-cuda are not cells of this study: named, never exported
    assert set(frame["experiment_id"]) == {"precision-fp32", "precision-amp"}
    assert (frame["project_name"] == STUDY).all()
    folder = tmp_path / "runs" / STUDY
    assert err.splitlines() == [f"skipped, not part of this study: {folder / n}.ipynb"
                                for n in ("precision-cuda", "precision-gpu")]


def test_cli_export_output_option(study_runs, tmp_path):
    study = write_study(tmp_path)
    target = tmp_path / "elsewhere" / "log.csv"
    assert main(["export", str(study), "--runs-dir", str(tmp_path / "runs"),
                 "--report-dir", str(tmp_path / "report"), "--output", str(target)]) == 0
    assert target.is_file() and not (tmp_path / "report" / STUDY).exists()


def test_cli_export_bad_study_file(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.toml"), "--runs-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_when_every_cell_diverged(tmp_path):
    """Every cell diverged: the report is still written, with the diverged rows and figures
    that say why they are empty (it used to crash on a None accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    from energy_lib.report import write_report

    folder = tmp_path / "runs" / STUDY
    diverged = summary_record(status="diverged", best_val_acc_pct=None, final_val_acc_pct=None,
                              final_val_loss=None, epochs_completed=1)
    for cell in ("precision-fp32", "precision-amp"):
        write_cell(folder, cell, summary=diverged,
                   config=config_record(cell, precision=cell.split("-")[1]))
    written = write_report(read_runs(folder), tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "results.csv")
    assert sorted(table["status"]) == ["diverged", "diverged"]
    assert table["energy_kwh"].notna().all()  # the energy spent before diverging is reported
    texts = [t.get_text() for t in written["figures"]["accuracy_vs_energy"].axes[0].texts]
    assert any("no cell has both an accuracy and an energy figure" in t for t in texts)
    assert (tmp_path / "report" / "accuracy_vs_energy.png").is_file()


# ------------------------------------------------------------------------------------------
# The codecarbon3 schema: CodeCarbon 3.x's emissions.csv columns
# ------------------------------------------------------------------------------------------

#: codecarbon3 fields nothing in a record says: CodeCarbon's own version, its 1-s utilisation
#: means, water, location and cloud.
CODECARBON3_UNKNOWABLE = ["codecarbon_version", "water_consumed", "wue", "region",
                          "cloud_provider", "cloud_region", "longitude", "latitude", "on_cloud",
                          "cpu_utilization_percent", "gpu_utilization_percent",
                          "ram_utilization_percent", "ram_used_gb"]


def empty(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def installed_codecarbon3():
    """CodeCarbon's EmissionsData, imported for real; the test is skipped without CodeCarbon 3.x."""
    codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")
    if not codecarbon.__version__.startswith("3."):
        pytest.skip(f"CodeCarbon {codecarbon.__version__} is not 3.x")
    from codecarbon.output_methods.emissions_data import EmissionsData

    return EmissionsData


def test_pinned_codecarbon3_columns_are_emissions_data_fields():
    """The pinned list (used without CodeCarbon) is the installed EmissionsData's fields, in
    order -- and so are the columns derived from the installed source without importing it."""
    import dataclasses

    from energy_lib.energy.codecarbon_backend import _hide_broken_amdsmi

    _hide_broken_amdsmi()
    fields = [f.name for f in dataclasses.fields(installed_codecarbon3())]
    assert CODECARBON3_COLUMNS == fields
    assert list(installed_emissions_data_fields()) == fields == codecarbon3_columns()
    assert {"cpu_utilization_percent", "gpu_utilization_percent", "ram_utilization_percent",
            "ram_used_gb", "water_consumed", "wue"} <= set(fields)


def test_codecarbon3_columns_without_codecarbon(monkeypatch):
    monkeypatch.setattr(export_module, "installed_emissions_data_fields", lambda: None)
    assert codecarbon3_columns() == CODECARBON3_COLUMNS
    assert export_module.columns("codecarbon3") == CODECARBON3_COLUMNS


def test_codecarbon3_columns_and_finished_runs_only(study_runs):
    frame = export_runs(read_runs(study_runs), STUDY, schema="codecarbon3")
    assert list(frame.columns) == codecarbon3_columns()
    assert sorted(frame["experiment_id"]) == ["precision-amp", "precision-cuda", "precision-fp32"]


def test_codecarbon3_values_follow_codecarbon_conventions(study_runs):
    """CodeCarbon 3.x multiplies power and energy by the PUE (1.2 here), so emissions =
    energy_consumed x intensity; RAM in GiB. Emissions are ours, unchanged."""
    row = by_cell(export_runs(read_runs(study_runs), STUDY, schema="codecarbon3"))["precision-fp32"]
    assert row["duration"] == pytest.approx(40.0)
    assert row["cpu_energy"] == pytest.approx(1800.0 / 3.6e6 * 1.2)
    assert row["ram_energy"] == pytest.approx(360.0 / 3.6e6 * 1.2)
    assert row["energy_consumed"] == pytest.approx((1800.0 + 360.0) / 3.6e6 * 1.2)
    assert row["cpu_power"] == pytest.approx(1800.0 * 1.2 / 40.0)
    assert row["ram_power"] == pytest.approx(360.0 * 1.2 / 40.0)
    emissions = 2160.0 / 3.6e6 * 56.039 * 1.2 / 1000
    assert row["emissions"] == pytest.approx(emissions)
    assert row["emissions"] == pytest.approx(row["energy_consumed"] * 56.039 / 1000)
    assert row["emissions_rate"] == pytest.approx(emissions / 40.0)
    assert row["pue"] == 1.2
    assert row["ram_total_size"] == pytest.approx(25.3e9 / 2 ** 30)
    assert row["country_name"] == "France" and row["country_iso_code"] == "FRA"
    assert row["project_name"] == STUDY and row["run_id"] == f"{STUDY}/precision-fp32"
    assert row["timestamp"] == "2026-01-01T00:00:45+00:00"
    assert row["os"].startswith("Linux") and row["python_version"] == "3.11.2"
    assert row["cpu_count"] == 2 and row["cpu_model"] == "AMD EPYC"
    assert row["gpu_count"] == 0 and empty(row["gpu_model"])
    assert empty(row["gpu_energy"]) and empty(row["gpu_power"])
    assert row["tracking_mode"] == "machine"
    cuda = by_cell(export_runs(read_runs(study_runs), STUDY, schema="codecarbon3"))["precision-cuda"]
    assert cuda["gpu_count"] == 1 and cuda["gpu_model"] == "Tesla T4"
    assert cuda["gpu_energy"] == pytest.approx(7200.0 / 3.6e6 * 1.2)


def test_codecarbon3_unknowable_fields_are_empty(study_runs):
    row = by_cell(export_runs(read_runs(study_runs), STUDY, schema="codecarbon3"))["precision-fp32"]
    for column in CODECARBON3_UNKNOWABLE:
        assert empty(row[column]), column
    path = write_export(read_runs(study_runs), STUDY, study_runs.parent / "cc3.csv",
                        schema="codecarbon3")
    fp32 = pd.read_csv(path).set_index("experiment_id").loc["precision-fp32"]
    for column in CODECARBON3_UNKNOWABLE:
        assert pd.isna(fp32[column]), column


@pytest.mark.parametrize("schema", SCHEMAS)
def test_codecarbon_version_is_empty_for_our_figures(tmp_path, schema):
    """Even when CodeCarbon ran alongside (the record names its version), the exported row holds
    our figures: codecarbon_version stays empty."""
    folder = tmp_path / "runs" / STUDY
    meters = {"codecarbon": {"version": "3.3.2", "csv": "x/emissions.csv", "emissions_kg": 1e-6,
                             "pue": 1.2, "intensity_g_per_kwh": 56.039,
                             "intensity_source": "country table"}}
    write_cell(folder, "precision-fp32", meters=meters)
    runs = read_runs(folder)
    assert runs.runs.loc[0, "codecarbon_version"] == "3.3.2"  # the record does name it
    row = export_runs(runs, STUDY, schema=schema).iloc[0]
    assert empty(row["codecarbon_version"])
    assert row["cpu_energy"] > 0  # the row is there, with our figures


def test_tracking_mode_follows_the_headline_scope():
    for scope, mode in (("process", "process"), ("machine", "machine"), ("mixed", None),
                        ("none", None)):
        for schema in SCHEMAS:
            row = export_row(pd.Series({"cell": "a", "energy_scope": scope}), "s", schema)
            assert row["tracking_mode"] == mode, (scope, schema)


def test_export_unknown_schema_is_named(study_runs):
    with pytest.raises(ConfigError) as error:
        export_runs(read_runs(study_runs), STUDY, schema="codecarbon2")
    message = str(error.value)
    assert "codecarbon2" in message and all(name in message for name in SCHEMAS)


def test_cli_schemas_are_the_modules():
    from energy_lib import cli

    assert cli.EXPORT_SCHEMAS == SCHEMAS and SCHEMAS[0] == export_module.DEFAULT_SCHEMA


def test_cli_export_codecarbon3(study_runs, tmp_path, capsys):
    study = write_study(tmp_path)
    assert main(["export", str(study), "--runs-dir", str(tmp_path / "runs"),
                 "--report-dir", str(tmp_path / "report"), "--schema", "codecarbon3"]) == 0
    path = tmp_path / "report" / STUDY / "emissions_codecarbon3.csv"
    assert str(path) in capsys.readouterr().out
    frame = pd.read_csv(path)
    assert list(frame.columns) == codecarbon3_columns()
    assert set(frame["experiment_id"]) == {"precision-fp32", "precision-amp"}
    assert frame["codecarbon_version"].isna().all()
    assert not (tmp_path / "report" / STUDY / "emissions_log.csv").exists()


def test_cli_export_replaces_an_earlier_export_of_either_schema(study_runs, tmp_path):
    study = write_study(tmp_path)
    target = tmp_path / "out.csv"
    base = ["export", str(study), "--runs-dir", str(tmp_path / "runs"), "--output", str(target)]
    assert main(base + ["--schema", "codecarbon3"]) == 0 and is_export(target)
    assert main(base) == 0 and list(pd.read_csv(target).columns) == EXPORT_COLUMNS
    assert main(base + ["--schema", "codecarbon3"]) == 0
    assert list(pd.read_csv(target).columns) == codecarbon3_columns()
    target.write_text("a,b\n1,2\n")
    assert not is_export(target)
    assert main(base + ["--schema", "codecarbon3"]) == 2  # not ours: needs --overwrite


@pytest.mark.parametrize("value", ["codecarbon2", "CODECARBON3", ""])
def test_cli_export_bad_schema(study_runs, tmp_path, capsys, value):
    study = write_study(tmp_path)
    code = main(["export", str(study), "--runs-dir", str(tmp_path / "runs"),
                 "--report-dir", str(tmp_path / "report"), "--schema", value])
    assert code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and out == ""
    assert lines[0].startswith("energy-study: error: argument --schema: invalid choice")
    assert all(f"'{name}'" in lines[0] for name in SCHEMAS)
    assert not (tmp_path / "report").exists()


def test_cli_export_bad_schema_in_a_real_process(tmp_path):
    """As a user runs it: one line on stderr, exit 2, no traceback."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "energy_lib", "export", "missing.toml",
                           "--schema", "nope"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        ("energy-study: error: argument --schema: invalid choice: 'nope' (choose from "
         "'experiment-log', 'codecarbon3') (energy-study export --help shows the options)")]
