"""`energy-study selfcheck` on a machine without RAPL, NVML or a GPU: it says what Zeus cannot
measure and why, and shows the modelled figures of an idle and a busy window; with Zeus's CPU
devices faked, the measured path."""

from __future__ import annotations

import re

import pytest
import torch

from energy_lib import selfcheck
from energy_lib.cli import main
from energy_lib.energy.power_models import lookup_cpu_tdp
from energy_lib.provenance import total_ram_gb
from energy_lib.energy.zeus_meter import ZeusMeter
from energy_lib.provenance import cpu_model

LINE = re.compile(r"^\s+(idle|busy)\s+(cpu|ram):\s+(-?[\d.]+) J over\s+([\d.]+) s =\s+(-?[\d.]+) W"
                  r"\s+\[([\w-]+), (measured|modelled)\]")

no_rapl_here = pytest.mark.skipif(ZeusMeter.probe([], measure_cpu=True)[0] is not None,
                                  reason="RAPL is readable on this machine")
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")


def window_lines(text: str) -> list[tuple]:
    return [LINE.match(line).groups() for line in text.splitlines() if LINE.match(line)]


@no_rapl_here
@no_gpu_here
def test_check_cpu_says_what_is_modelled_and_why(capsys):
    assert selfcheck.check_cpu(idle_s=0.2, busy_s=0.3) == 0
    out = capsys.readouterr().out
    _, notes = ZeusMeter.probe([], measure_cpu=True)
    assert f"CPU: not measured -- {'; '.join(notes)}" in out
    tdp_w, source, _ = lookup_cpu_tdp(cpu_model())
    assert f"modelled instead: {tdp_w:g} W TDP ({source}) x utilisation" in out
    assert "RAM: not measured (no RAPL DRAM domain)" in out
    assert f"x {total_ram_gb():.1f} GB installed" in out
    assert "GPU: none visible to torch (GPU energy not measured: Zeus sees no GPU" in out
    lines = window_lines(out)
    assert [(w, c) for w, c, *_ in lines] == [("idle", "cpu"), ("idle", "ram"),
                                              ("busy", "cpu"), ("busy", "ram")]
    for window, component, joules, seconds, watts, method, kind in lines:
        assert kind == "modelled"
        assert method == {"cpu": "tdp-model", "ram": "ram-model"}[component]
        assert float(seconds) >= {"idle": 0.2, "busy": 0.3}[window] - 0.005
        assert 0 <= float(watts) <= (tdp_w if component == "cpu" else 1e3) + 0.05
    busy_cpu = float(lines[2][4])
    assert busy_cpu > 0  # matrix products keep at least one core busy


@no_gpu_here
def test_check_cpu_with_readable_rapl(monkeypatch, capsys):
    import zeus.device.cpu as zeus_cpu

    from test_zeus_meter import FakeCPUs

    monkeypatch.setattr(zeus_cpu, "_cpus", FakeCPUs(packages=1, dram=True))
    assert selfcheck.check_cpu(idle_s=0.05, busy_s=0.05) == 0
    out = capsys.readouterr().out
    assert "CPU: measured -- CPU and DRAM: Zeus, RAPL counters of 1 package(s)" in out
    assert "RAM: not measured" not in out and "TDP" not in out
    lines = window_lines(out)
    assert {(c, m, k) for _, c, _, _, _, m, k in lines} == {("cpu", "zeus-rapl", "measured"),
                                                           ("ram", "zeus-rapl", "measured")}
    assert all(float(j) == 0.0 for _, _, j, *_ in lines)  # the fake counters never moved


@pytest.mark.slow
@no_rapl_here
@no_gpu_here
def test_cli_selfcheck(capsys):
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"energy self-check on {cpu_model()}")
    assert "CPU: not measured" in out
    assert len(window_lines(out)) == 4
