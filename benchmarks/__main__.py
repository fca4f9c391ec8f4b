"""`python -m benchmarks [--smoke] [--only P1,P3] [--out FILE]`: run the suite, print a short
table, write JSON to benchmarks/results/<machine-tag>.json (see suite.py for what each part
measures and its target)."""

from __future__ import annotations

import argparse
import statistics
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from energy_lib.errors import EnergyStudyError
from energy_lib.files import atomic_write, check_output_file
from energy_lib.provenance import collect, cpu_model

from . import suite

#: The suite's parts (suite.py says what each measures).
PARTS = ("P1", "P2", "P3", "P4", "P5", "P6", "P8", "P9", "P10", "P11")
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]


def machine_tag(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{slug}-{os.cpu_count()}cpu"


def run(parts: list[str], smoke: bool, device: torch.device) -> dict:
    sizes = dict(images=4096 if smoke else 32768, steps=3 if smoke else 12,
                 repeats=1 if smoke else 3, pairs=2 if smoke else 12,
                 block_steps=4 if smoke else 30)
    results: dict = {}
    if "P1" in parts:
        results["P1"] = suite.p1_input_pipeline(device, sizes["images"], sizes["repeats"])
    if "P2" in parts:
        widths = [1] if smoke else [1, 2, 3]
        precisions = ["fp32"] if smoke else ["fp32", "amp"]
        results["P2"] = suite.p2_training(device, widths, precisions, sizes["steps"], sizes["repeats"])
    if "P3" in parts:
        results["P3"] = suite.p3_meter_overhead(sizes["pairs"], sizes["block_steps"])
    if "P4" in parts:
        results["P4"] = suite.p4_orchestration(1 if smoke else 3)
    if "P5" in parts:
        results["P5"] = suite.p5_quick_study()
    if "P6" in parts:
        results["P6"] = suite.p6_predictions(1 if smoke else 5)
    if "P8" in parts:
        results["P8"] = suite.p8_scaleout(smoke)
    if "P9" in parts:
        results["P9"] = (suite.p9_contention(1, 256, 1) if smoke
                         else suite.p9_contention(3, 2048, 2))
    if "P10" in parts:
        results["P10"] = suite.p10_plan_vs_actual(smoke)
    if "P11" in parts:
        results["P11"] = suite.p11_tracker_overhead(1 if smoke else 10, smoke)
    return results


def table(results: dict) -> str:
    lines = ["part  measurement                                   value          target   met"]

    def add(part, what, value, target, met):
        lines.append(f"{part:<5} {what:<45} {value:<14} {target:<8} {'yes' if met else 'NO'}")

    if "P1" in results:
        r = results["P1"]
        add("P1", f"input: {r['energy_lib_img_per_s']['median']:,.0f} vs "
            f"{r['torchvision_img_per_s']['median']:,.0f} img/s", f"{r['ratio']:.1f}x", ">= 20x", r["met"])
    if "P2" in results:
        for c in results["P2"]["cells"]:
            add("P2", f"train w{c['width']:g} {c['precision']}: {c['energy_lib_img_per_s']['median']:,.0f} vs "
                f"{c['seed_img_per_s']['median']:,.0f} img/s ({100 * c['peak_utilisation']:.0f}% peak)",
                f"{c['ratio']:.2f}x", ">= 2x" if c["width"] == 1 and c["precision"] == "fp32" else "-",
                c["ratio"] >= 2 if c["width"] == 1 and c["precision"] == "fp32" else True)
    if "P3" in results:
        r = results["P3"]
        add("P3", f"meters on vs off: {1000 * r['step_s_meters_on']['median']:.1f} vs "
            f"{1000 * r['step_s_meters_off']['median']:.1f} ms/step", f"{r['overhead_pct']:+.2f} %",
            "<= 1 %", r["met"])
        add("P3", f"  direct: edge pair {r['window_edge_pair_us']:.0f} us, sample "
            f"{r['timeline_sample_us']:.0f} us / 0.5 s", f"{r['timeline_cost_pct_of_time']:.3f} %",
            "-", True)
    if "P4" in results:
        r = results["P4"]
        add("P4", f"papermill {r['papermill_s']['median']:.1f} s vs in-process "
            f"{r['in_process_s']['median']:.1f} s", f"{r['overhead_s']:.1f} s", "<= 3 s", r["met"])
    if "P5" in results:
        r = results["P5"]
        add("P5", "quick study end to end", f"{r['wall_s']:.0f} s", "<= 300 s", r["met"])
    if "P6" in results:
        r = results["P6"]
        for label, run in (("new process, no fit cache", r["cold_no_cache"]),
                           ("new process, fit cached", r["cold_cached"])):
            add("P6", f"predictions, {label}: ops {run['ops_model_cold_s']:.2f} + "
                f"regr {run['layer_regression_cold_s']:.2f} s",
                f"{run['ops_model_cold_s'] + run['layer_regression_cold_s']:.2f} s/cell",
                "<= 0.5 s" if run is r["cold_cached"] else "-",
                r["met"] if run is r["cold_cached"] else True)
        add("P6", f"predictions, warm: ops {1000 * r['cold_cached']['ops_model_warm_s']:.0f} + regr "
            f"{1000 * r['cold_cached']['layer_regression_warm_s']:.0f} ms",
            f"{r['warm_cell_s']:.3f} s/cell", "-", True)
    if "P8" in results:
        r = results["P8"]["study"]
        add("P8", f"{r['cells']} cells: serial {r['serial_s']:.0f} s vs dask x{r['workers']} "
            f"{r['dask_s']:.0f} s", f"{r['ratio']:.2f}x", ">= 1.6x", r["met"])
        s = results["P8"]["scale"]
        first, last = s["sizes"]
        add("P8", f"  runner per cell, {s['workers']} workers: {first['cells']} vs "
            f"{last['cells']} cells", f"{first['overhead_per_cell_s']:.2f} vs "
            f"{last['overhead_per_cell_s']:.2f} s", "flat", s["overhead_growth"] <= 1.5)
    if "P9" in results:
        r = results["P9"]
        add("P9", "busy neighbour: time beside / alone", f"{r['time_ratio']:.2f}x", "-", True)
        add("P9", "  CPU energy beside / alone: machine", f"{r['machine_cpu_energy_ratio']:.2f}x",
            "-", True)
        add("P9", "  CPU energy beside / alone: the cell's own (attributed)",
            f"{r['process_cpu_energy_ratio']:.2f}x", f"<= {r['attributed_target']:.2f}x",
            r["attributed_met"])
        add("P9", f"  others' CPU share alone {100 * r['others_cpu_share_alone']:.0f} %, beside "
            f"{100 * r['others_cpu_share_beside']:.0f} %",
            "contended " + "/".join("yes" if c else "no" for c in r["contended_beside"]),
            "beside", all(r["contended_beside"]))
        add("P9", "  alone not contended", "contended " + "/".join(
            "yes" if c else "no" for c in r["contended_alone"]), "alone", not any(r["contended_alone"]))
    if "P10" in results:
        r = results["P10"]
        add("P10", f"plan vs actual, {len(r['cells'])} cells: {r['plan_s']:.0f} s planned, "
            f"{r['actual_s']:.0f} s ran", f"{r['time_ratio']:.2f}x", "0.70-1.30x", r["met"])
        add("P10", "  training + evaluation time, headline energy: plan / actual",
            f"{r['train_eval_ratio']:.2f}x, {r['energy_ratio']:.2f}x", "-", True)
    if "P11" in results:
        r = results["P11"]
        low, high = r["pair_overhead_ci_pct"]
        interval = f" [{low:+.1f}, {high:+.1f}]" if low is not None else ""
        add("P11", "the Tracker's own cost per epoch (timed directly) / plain epoch",
            f"{r['direct_overhead_pct']:.2f} %", "<= 1 %", r["met"])
        add("P11", f"  end to end, on vs off: {r['tracked_epoch_s']['median']:.3f} vs "
            f"{r['plain_epoch_s']['median']:.3f} s/epoch; pairs' mean, 95 % interval",
            f"{r['overhead_pct']:+.2f} %; {statistics.mean(r['pair_overhead_pct']):+.2f} %"
            f"{interval}", "-", True)
        add("P11", f"  per run, outside epochs: open {r['tracker_open_s']['median']:.3f} s, "
            f"close {r['tracker_close_s']['median']:.3f} s", "-", "-", True)
    return "\n".join(lines)


def is_result_file(path: Path) -> bool:
    """A JSON document this suite wrote (its command, machine and results)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and {"command", "machine", "results"} <= set(document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs, not the targets")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/<machine-tag>.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file that is not a benchmark result")
    args = parser.parse_args(argv)
    parts = [p.strip().upper() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"benchmarks: error: unknown part(s) {', '.join(unknown)}; use {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out) if args.out else RESULTS / f"{machine_tag(device)}.json"
    try:  # before an hour of measuring: never a file this suite did not write
        check_output_file(out, "--out file", ours=is_result_file, overwrite=args.overwrite,
                          never_inside=[ROOT / "runs"])
    except EnergyStudyError as error:
        print(f"benchmarks: error: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = run(parts, args.smoke, device)
    document = {
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_tag(device), "smoke": args.smoke,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": collect(device), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "wall_s": time.perf_counter() - started,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(document, indent=2, default=str)))
    print(table(results))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
