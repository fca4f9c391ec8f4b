"""report.gpu_energy on a hand-made energy table: what a measured GPU total is made of."""

from energy_lib.report.gpu_energy import gpu_lines


def _row(cell, epoch, phase, energy_j, duration_s, above_j, kind="measured", component="gpu"):
    return {"cell": cell, "epoch": epoch, "phase": phase, "component": component,
            "method": "zeus-nvml", "kind": kind, "energy_j": energy_j, "duration_s": duration_s,
            "above_idle_j": above_j, "scope": "machine", "flag": ""}


def test_gpu_lines_say_warm_up_steady_state_above_idle_and_short_windows():
    rows = []
    for cell in ("a", "b"):
        rows += [_row(cell, 1, "train", 600.0, 5.0, 60.0), _row(cell, 1, "eval", 0.0, 0.01, -1.0),
                 _row(cell, 2, "train", 300.0, 2.0, 30.0), _row(cell, 2, "eval", 100.0, 0.5, 10.0)]
    first, short = gpu_lines(rows)
    # epoch 1 = 600 of 1000 J; steady epoch 400 J; above idle 99 of 1000 J
    assert first == ("GPU energy (measured): epoch 1 holds a median 60 % of a cell's GPU total "
                     "(warm-up: autotuning, allocation, clocks); after it, an epoch costs a median "
                     "400 J (the steady state, which a longer run is made of); energy above the "
                     "idle baseline is a median 10 % of the total.")
    assert short.startswith("2 GPU windows were shorter than the energy counter's update period "
                            "(~100 ms assumed: these records predate its measurement), e.g. a "
                            "eval-1 (10 ms, 0 J), b eval-1 (10 ms, 0 J)")
    assert gpu_lines([_row("a", 1, "train", 5.0, 1.0, 1.0, kind="modelled", component="cpu")]) == []


def test_short_windows_are_judged_by_each_cells_measured_counter_period():
    """A record keeps its GPU counter's measured update period (runs table:
    meter_gpu_update_period_s): a 500 ms window is short beside a 600 ms counter, and a 10 ms
    one is not beside a 5 ms counter, whatever a fixed 100 ms would say."""
    import pandas as pd

    rows = []
    for cell in ("slow", "fast"):
        rows += [_row(cell, 1, "train", 600.0, 5.0, 60.0), _row(cell, 1, "eval", 20.0, 0.01, 1.0),
                 _row(cell, 2, "train", 300.0, 2.0, 30.0), _row(cell, 2, "eval", 100.0, 0.5, 10.0)]
    runs = pd.DataFrame({"cell": ["slow", "fast"], "meter_gpu_update_period_s": [0.6, 0.005]})
    _, short = gpu_lines(rows, runs)
    assert short.startswith("2 GPU windows were shorter than the energy counter's update period "
                            "(5-600 ms as measured on the GPU), e.g. slow eval-1 (10 ms, 20 J), "
                            "slow eval-2 (500 ms, 100 J)")
    one = runs.assign(meter_gpu_update_period_s=[0.02, 0.02])
    _, short = gpu_lines(rows, one)
    assert short.startswith("2 GPU windows were shorter than the energy counter's update period "
                            "(20 ms as measured on the GPU), e.g. slow eval-1 (10 ms, 20 J), "
                            "fast eval-1 (10 ms, 20 J)")
    assert len(gpu_lines(rows, runs.assign(meter_gpu_update_period_s=[0.001, 0.001]))) == 1
    _, short = gpu_lines(rows, runs.assign(meter_gpu_update_period_s=[0.02, None]))  # mixed
    assert short.startswith("2 GPU windows were shorter than the energy counter's update period "
                            "(20 ms as measured on the GPU; ~100 ms assumed for the records that "
                            "predate its measurement), e.g. slow eval-1 (10 ms, 20 J), fast "
                            "eval-1 (10 ms, 20 J)")
