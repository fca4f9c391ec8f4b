"""`energy-study`: run a study of the energy it takes to train neural networks, as lab records.

A study file (studies/*.toml) names a grid of training runs. `energy-study run STUDY` executes
one notebook per grid cell into runs/<study>/ (a lab record you can read later) and then the
analysis into report/<study>/ (figures, results.csv, analysis.html).

(For developers: argument parsing and messages only; the work is in the study/ package, and
`calibrate`'s in estimators/calibrate.py. A user mistake prints one line and exits 2; failed cells
exit 1 after every other cell ran; an interrupt exits 130, SIGTERM 143, and the next run resumes.
`OneLineParser` and `run_tool` give the experiments in benchmarks/ the same contract.)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import EnergyStudyError, StudyError, Terminated
from .folders import REPORT, RUNS

DESCRIPTION = """\
Measure the energy it takes to train neural networks, one lab record per run.
A study file (studies/*.toml) names a grid of runs; `run` executes one notebook per cell into
runs/<study>/ and the analysis into report/<study>/ (figures, results.csv, analysis.html)."""
EPILOG = """\
examples:
  energy-study run studies/quick.toml           run unfinished cells, then the analysis
  energy-study run studies/quick.toml --force   rerun finished cells too (old records kept)
  energy-study list studies/quick.toml          each cell's status
  energy-study init my-study                    a starter folder (studies/, notebooks/)
A mistake prints one line and exits 2; failed cells exit 1 after the others ran."""


#: `export --schema` values (report.export.SCHEMAS, the first the default; spelled here so that
#: parsing the command line imports no pandas; tests/test_export.py checks they agree).
EXPORT_SCHEMAS = ("experiment-log", "codecarbon3")


class UsageError(Exception):
    """An argument the parser cannot take: said in the CLI's one line, not a usage block."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line mistakes: it raises UsageError (which `run_tool` prints as
    `<prog>: error: ...`, exit 2) instead of printing a usage block and exiting, whichever
    subcommand the mistake is in. Where the prog has several words (`energy-study run`,
    `python -m benchmarks.whole_model`) the message ends with `(<prog> --help shows the options)`.
    `options`, if given, adds the parser's arguments the first time it parses or shows its help:
    a subcommand whose options come from a module slow to import (`calibrate`: torch) costs
    nothing when another command is parsed."""

    def __init__(self, *args, options: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._options = options

    def _add_options(self) -> None:
        if self._options is not None:
            add, self._options = self._options, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._add_options()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_options()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_options()
        return super().format_help()

    def error(self, message: str):
        message = " ".join(message.splitlines())
        raise UsageError(f"{message} ({self.prog} --help shows the options)"
                         if " " in self.prog else message)


def run_tool(prog: str, work: Callable[[], int], *, resume: str = "") -> int:
    """Run `work()` (parsing included) as a command-line tool and return its exit status: a user
    mistake (EnergyStudyError, UsageError) prints one line, `<prog>: error: <message>`, and
    returns 2; SIGTERM prints `<prog>: terminated (SIGTERM)<resume>` and returns 128 + 15; Ctrl-C
    prints `<prog>: interrupted<resume>` and returns 130. No traceback for any of these. `resume`
    says what a rerun does, e.g. "; run the same command again to resume (...)"."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return work()
    except (EnergyStudyError, UsageError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{prog}: terminated (SIGTERM){resume}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{resume}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _override(text: str) -> tuple[str, object]:
    """`key=value` with a TOML value (`epochs=1`, `device="cpu"`, bare words read as text)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="energy-study", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = OneLineParser(add_help=False)
    common.add_argument("study", help="study file, e.g. studies/quick.toml (report: or a folder "
                        "of records energy_lib.Tracker wrote, e.g. runs/mine)")
    common.add_argument("--set", dest="overrides", metavar="KEY=VALUE", type=_override,
                        action="append", default=[], help="replace a [fixed] setting (repeatable)")
    common.add_argument("--runs-dir", help="root of the lab records (default: runs/ in the "
                        "study's project root, the folder holding its studies/ folder)")
    common.add_argument("--report-dir", help="root of the reports (default: report/ in the "
                        "study's project root)")
    common.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="runs per setting (replaces the study file's repeats; seeds seed, seed+1, ...)")
    common.add_argument("--max-cells", type=int, default=None, metavar="N",
                        help="largest grid accepted (default: 10000); checked before any cell is built")
    run = commands.add_parser("run", parents=[common], help="execute every unfinished cell, then the analysis")
    run.add_argument("--force", action="store_true", help="rerun finished cells too (old records are kept in superseded/)")
    run.add_argument("--cell", dest="cells", action="append", help="run only this cell (repeatable)")
    run.add_argument("--no-report", action="store_true", help="skip the analysis notebook")
    run.add_argument("--no-plan", action="store_true", help="skip the probe before the first "
                     "cell that prints the plan's total (a few seconds per distinct setting)")
    run.add_argument("--plan", action="store_true", help="print each unfinished cell's predicted "
                     "time and energy here (a few probed training steps per setting), then exit "
                     "without running anything or writing runs/ or report/")
    run.add_argument("--executor", default="serial", metavar="{serial,dask}",
                     help="serial (default): one cell at a time here; dask: one cell per Dask "
                     "worker at a time (README: Scale-out)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="with --executor dask: start N workers on this machine (one per CUDA "
                     "GPU where there are GPUs)")
    run.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                     help="before each cell, wait up to SECONDS for other processes to leave "
                     "the machine quiet (serial executor)")
    run.add_argument("--rerun", action="append", default=[], metavar="WHICH",
                     help="also rerun finished cells of this kind: contended (old records are "
                     "kept in superseded/)")
    run.add_argument("--rerun-block", action="store_true",
                     help="with --cell or --rerun: also rerun every other arm of their "
                     "comparisons (the cells that differ only in the compared axis), so no "
                     "comparison pairs a new record with an old one")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="with --executor dask: use the running Dask cluster at ADDRESS "
                     "(e.g. tcp://node:8786)")
    commands.add_parser("report", parents=[common], help="rerun only the analysis")
    commands.add_parser("list", parents=[common], help="show the cells and their status")
    export = commands.add_parser("export", parents=[common],
                                 help="write one row per run in a CodeCarbon-style schema")
    export.add_argument("--schema", choices=EXPORT_SCHEMAS, default=EXPORT_SCHEMAS[0],
                        help="experiment-log (default): CodeCarbon's run columns plus the "
                        "training's (model, dataset, epochs, losses, accuracies); codecarbon3: "
                        "exactly CodeCarbon 3.x's emissions.csv columns")
    export.add_argument("--output", help="CSV path (default: report/<study>/emissions_log.csv; "
                        "with --schema codecarbon3: report/<study>/emissions_codecarbon3.csv)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing file that is not an earlier export")
    init = commands.add_parser("init", help="write a starter folder: the example studies and "
                               "the notebooks to open (for an install without a checkout)")
    init.add_argument("folder", nargs="?", default=".", help="where (default: here); files "
                      "already there are kept")
    commands.add_parser("selfcheck", help="measure a known workload; say what can be measured here")
    commands.add_parser("calibrate", options=_calibrate_options,
                        help="measure this machine's per-layer energy for the layer-regression "
                             "estimator (energy-study calibrate --help)")
    return parser


def _range(text: str) -> tuple[int, int]:
    """`LOW,HIGH` (or LOW:HIGH) integers: a calibration range."""
    parts = text.replace(":", ",").split(",")
    try:
        low, high = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH integers") from None
    return low, high


def _calibrate_options(parser: argparse.ArgumentParser) -> None:
    """`energy-study calibrate`'s options, with the plan's defaults from estimators/calibrate.py
    (which imports torch: added only when `calibrate` is parsed, see OneLineParser)."""
    from dataclasses import fields

    from .estimators import calibrate
    from .estimators.layer_data import LAYER_TYPES

    parser.description = calibrate.__doc__.splitlines()[0]
    parser.add_argument("--quick", action="store_true", help="small layers, 6 per type, and the "
                        "zoo's own layers: minutes on a 2-core CPU")
    parser.add_argument("--per-type", type=int, help="configurations per layer type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--types", help=f"comma-separated subset of {','.join(LAYER_TYPES)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", help="comma-separated compute dtypes to measure (default: "
                                         "float32 and the device's amp dtype)")
    parser.add_argument("--machine", help="file name stem (default: derived from the CPU/GPU name)")
    parser.add_argument("--out-dir", default=str(calibrate.DEFAULT_DIR))
    parser.add_argument("--min-window-s", type=float)
    parser.add_argument("--no-zoo", action="store_true", help="random samples only: leave out "
                        "the zoo's own layers (paper CNN, ResNet-18, MLP at batch "
                        f"{', '.join(map(str, calibrate.ZOO_BATCH_SIZES))})")
    for f in fields(calibrate.Ranges):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=_range, metavar="LOW,HIGH",
                            help=f"range (default {getattr(calibrate.Ranges(), f.name)}; --quick "
                                 f"{getattr(calibrate.QUICK, f.name)})")


def _cmd_init(folder: str) -> int:
    from .bundled import write_starter

    written, kept = write_starter(folder)
    for path in written:
        print(f"wrote {path}")
    for path in kept:
        print(f"kept {path} (already there)")
    where = "" if Path(folder) == Path(".") else f"cd {folder} && "
    print(f"next: {where}energy-study run studies/quick.toml  (runs/ and report/ go there too; "
          "open notebooks/analysis.ipynb in JupyterLab to read the report)")
    return 0


def _cmd_list(study, args) -> int:
    from .study import study_state

    state = study_state(study, study.runs_dir(args.runs_dir))
    width = max(len(name) for name in state.cells)
    print(f"study {study.name}: {len(state.cells)} cells in {study.runs_dir(args.runs_dir)}")
    for name in state.cells:
        print(f"  {name:<{width}}  {state.describe(name)}")
    for path in state.foreign:
        print(f"not part of this study: {path}")
    return 0


def _cmd_run(study, args) -> int:
    from .files import check_writable
    from .study import check_executor, open_executor, run_study
    from .study.runner import check_report_folder, check_rerun

    check_executor(args.executor, workers=args.workers, scheduler=args.scheduler,
                   wait_quiet_s=args.wait_quiet)
    check_rerun(args.rerun)
    unknown = sorted(set(args.cells or []) - {c.name for c in study.cells})
    if unknown:
        raise StudyError(f"unknown cell(s) {', '.join(unknown)}; cells: "
                         f"{', '.join(c.name for c in study.cells)}")
    axis = study.compared_axis
    if (args.cells or args.rerun) and axis and not args.rerun_block:
        print(f"energy-study: note: {'--cell' if args.cells else '--rerun'} reruns only some arms "
              f"of the {axis} comparison; the other arms stay as they were, and the report does "
              "not pair records of different runs (--rerun-block reruns every arm)", flush=True)
    if args.plan:
        return _plan(study, args)
    if not args.no_report:  # before the first cell, not after an hour of training
        check_writable(study.report_dir(args.report_dir), "report")
        check_report_folder(study.report_dir(args.report_dir), study.runs_dir(args.runs_dir))
    started = time.perf_counter()
    with open_executor(args.executor, workers=args.workers, scheduler=args.scheduler,
                       wait_quiet_s=args.wait_quiet) as executor:
        outcome = run_study(study, force=args.force, rerun=tuple(args.rerun),
                            runs_root=args.runs_dir, only=args.cells, executor=executor,
                            look_first=True, block=args.rerun_block, plan=not args.no_plan)
    cells_s = time.perf_counter() - started
    busy = f"{len(outcome.busy)} running elsewhere, " if outcome.busy else ""
    print(f"cells: {len(outcome.ran)} ran, {len(outcome.skipped)} skipped (finished), {busy}"
          f"{len(outcome.failed)} failed, in {cells_s:.1f} s")
    for name, seconds in outcome.seconds.items():
        print(f"  {name}: {seconds:.1f} s")
    report_status = 0
    if not args.no_report:
        report_status = _report(study, args)
        print(f"analysis took {time.perf_counter() - started - cells_s:.1f} s")
    if outcome.failed:
        print(f"failed cells (records kept in {study.runs_dir(args.runs_dir)}): "
              f"{', '.join(outcome.failed)}", file=sys.stderr)
        return 1
    return report_status


def _plan(study, args) -> int:
    """`run --plan`: the cells a run would start, predicted here; nothing is written."""
    from .study.runner import plan_text

    print(plan_text(study, study.runs_dir(args.runs_dir), force=args.force,
                    rerun=tuple(args.rerun), only=args.cells, block=args.rerun_block))
    return 0


def _report(study, args) -> int:
    """Run the analysis; a failure there is named in one line, the previous report left as it
    was and the failed attempt kept to read."""
    from .jupyter_imports import without_iri_grammars

    without_iri_grammars()
    import papermill as pm

    from .study import build_report

    def waiting(owner: str) -> None:
        print(f"report: waiting for the analysis of another runner ({owner})", flush=True)

    report_dir = study.report_dir(args.report_dir)
    try:
        print(f"report: {build_report(study, runs_root=args.runs_dir, report_root=args.report_dir, on_wait=waiting)}")
    except (EnergyStudyError, KeyboardInterrupt):
        raise
    except Exception as error:  # the analysis raised, or its kernel died
        if isinstance(error, pm.PapermillExecutionError):
            what = f"{error.ename}: {error.evalue}"
        else:
            reason = str(error).strip().splitlines()
            what = f"{type(error).__name__}: {reason[0] if reason else ''}".rstrip(": ")
        failed = report_dir.with_name(f"{report_dir.name}.failed") / "analysis.ipynb"
        print(f"energy-study: analysis failed: {what} (the previous report is unchanged; the "
              f"failed attempt is kept: {failed})", file=sys.stderr)
        return 1
    return 0


def _report_tracked(args) -> int:
    """`energy-study report DIR`: the report of a folder of Tracker records, into
    report/<DIR's name> beside the runs/ folder DIR is in (else under the working folder), or
    under --report-dir."""
    from .files import resolve_path, study_records_folder
    from .study.runner import build_tracked_report

    given = [flag for flag, value in (("--set", args.overrides), ("--repeats", args.repeats),
                                      ("--max-cells", args.max_cells)) if value]
    if given:
        raise StudyError(f"{given[0]} applies to a study file, not to a folder of tracked runs "
                         f"({args.study})")
    folder = resolve_path(args.study, "runs folder")
    study_folder = study_records_folder(folder)
    if study_folder is not None:
        raise StudyError(f"{args.study} holds a study's lab records ({study_folder}): report it "
                         f"with its study file, e.g. energy-study report "
                         f"studies/{study_folder.name}.toml")
    if not any(folder.glob("*.ipynb")):
        raise StudyError(f"{args.study} holds no lab record (*.ipynb): energy_lib.Tracker writes "
                         "them into its `out` folder")
    if args.report_dir:
        root = resolve_path(args.report_dir, "--report-dir")
    else:
        root = folder.parent.parent / REPORT if folder.parent.name == RUNS else Path(REPORT).resolve()
    print(f"report: {build_tracked_report(folder, root / folder.name)}")
    return 0


def _cmd_calibrate(args) -> int:
    from dataclasses import fields

    from .estimators.calibrate import Ranges, calibrate, make_plan

    plan = make_plan(quick=args.quick, no_zoo=args.no_zoo, per_type=args.per_type, seed=args.seed,
                     types=args.types, dtypes=args.dtypes, min_window_s=args.min_window_s,
                     ranges={f.name: getattr(args, f.name) for f in fields(Ranges)})
    start = time.perf_counter()
    path, written, already = calibrate(plan, out_dir=args.out_dir, machine=args.machine,
                                       device=args.device)
    print(f"calibration: {written} new rows ({already} already there) in {path} "
          f"in {time.perf_counter() - start:.0f} s")
    return 0


def _cmd_export(study, args) -> int:
    from .files import check_output_file
    from .report.export import DEFAULT_FILE_NAMES, is_export, write_export
    from .study import read_study

    path = args.output or study.report_dir(args.report_dir) / DEFAULT_FILE_NAMES[args.schema]
    check_output_file(path, "export file", ours=is_export, overwrite=args.overwrite,
                      never_inside=[study.runs_dir(args.runs_dir).parent])
    runs, state = read_study(study, study.runs_dir(args.runs_dir))
    for problem in runs.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    for foreign in state.foreign:
        print(f"skipped, not part of this study: {foreign}", file=sys.stderr)
    print(f"export: {write_export(runs, study.name, path, schema=args.schema)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    kept = "finished calibration rows" if argv[:1] == ["calibrate"] else "finished cells"
    return run_tool("energy-study", lambda: _command(argv),
                    resume=f"; run the same command again to resume ({kept} are kept)")


def _command(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "selfcheck":
        from .selfcheck import main as selfcheck

        return selfcheck()
    if args.command == "init":
        return _cmd_init(args.folder)
    if args.command == "calibrate":
        return _cmd_calibrate(args)
    if args.command == "report" and Path(args.study).is_dir():
        return _report_tracked(args)
    # folders the user typed mean the shell's working folder; the defaults (None) the
    # study's project root (Study.runs_dir)
    from .files import resolve_path

    for name, default in (("runs_dir", RUNS), ("report_dir", REPORT)):
        typed = getattr(args, name)
        setattr(args, name, resolve_path(typed, f"--{name.replace('_', '-')}") if typed else default)
    from .study import load_study

    limit = {} if args.max_cells is None else {"max_cells": args.max_cells}
    if args.repeats is not None:
        limit["repeats"] = args.repeats
    study = load_study(args.study, **limit, **dict(args.overrides))
    command = {"run": _cmd_run, "report": _report, "list": _cmd_list,
               "export": _cmd_export}[args.command]
    return command(study, args)


if __name__ == "__main__":
    sys.exit(main())
