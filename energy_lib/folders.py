"""The project's default folder names, spelt once: every module that means "the lab records'
root" or "where a replaced record goes" names it from here."""

#: lab records: runs/<study>/<cell>.ipynb (relative: the study's project root)
RUNS = "runs"
#: reports: report/<study>/ (relative: the study's project root)
REPORT = "report"
#: replaced records, kept: runs/<study>/superseded/<cell>.<time>.ipynb
SUPERSEDED = "superseded"
#: locks and in-progress copies: runs/<study>/.running/
RUNNING = ".running"
#: this machine's per-layer measurements: calibration/<machine>.csv
CALIBRATION = "calibration"
#: study files: studies/*.toml; the folder holding studies/ is a project root
STUDIES = "studies"
