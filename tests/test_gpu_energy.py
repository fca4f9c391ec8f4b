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
                            "(~100 ms), e.g. a eval-1 (10 ms, 0 J), b eval-1 (10 ms, 0 J)")
    assert gpu_lines([_row("a", 1, "train", 5.0, 1.0, 1.0, kind="modelled", component="cpu")]) == []
