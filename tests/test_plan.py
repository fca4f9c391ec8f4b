"""`energy-study run STUDY --plan` (study.plan, training.probe): every cell predicted from a real
probe of each distinct setting on real Fashion-MNIST files, and nothing written."""

from __future__ import annotations

import re

from energy_lib.cli import main
from energy_lib.study import load_study
from energy_lib.study.plan import setting_key

from conftest import TINY_STUDY, needs_fashion_mnist, write_study

#: The tiny study with 2 repeats of one width: 4 cells, 2 settings; a short idle window.
PLANNED = (TINY_STUDY.replace('name = "tiny"', 'name = "planned"\n    repeats = 2')
           .replace("idle_s = 0\n", "idle_s = 0.5\n").replace("width = [0.25, 0.5]", "width = [0.25]")
           .replace('precision = ["fp32", "bf16", "amp"]', 'precision = ["fp32", "amp"]'))


def test_cells_that_differ_only_in_seed_share_one_setting(tmp_path):
    study = load_study(write_study(tmp_path / "studies", PLANNED))
    keys = {cell.name: setting_key(cell) for cell in study.cells}
    assert len(keys) == 4 and len(set(keys.values())) == 2
    assert keys["width-0.25_precision-fp32_seed-0"] == keys["width-0.25_precision-fp32_seed-1"]
    assert keys["width-0.25_precision-fp32_seed-0"] != keys["width-0.25_precision-amp_seed-0"]


@needs_fashion_mnist
def test_plan_predicts_every_cell_and_writes_nothing(tmp_path, monkeypatch, capsys):
    write_study(tmp_path / "studies", PLANNED)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "studies/s.toml", "--plan"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies"]  # no runs/, no report/
    assert out.startswith("study planned: 4 cells to run here\n")
    rows = {m[0]: (float(m[1]), float(m[2])) for m in
            re.findall(r"^(width-\S+)\s+([\d.]+) s\s+([\d.]+) J\s+(-|[\d.]+ k?J)$", out,
                       re.MULTILINE)}
    assert len(rows) == 4  # each cell: seconds, joules, the layer regression where calibrated
    assert all(seconds > 0.5 and joules > 0 for seconds, joules in rows.values())  # idle_s = 0.5
    assert rows["width-0.25_precision-fp32_seed-0"] == rows["width-0.25_precision-fp32_seed-1"]
    assert re.search(r"^total\s+\d+ s\s+[\d.]+ k?J$", out, re.MULTILINE)
    assert "rates of 2 probed settings" in out and "never recorded" in out
    assert "energy: the headline of training and evaluation, modelled (" in out \
        or "energy: the headline of training and evaluation, measured (" in out
