"""The study runner: study file -> cells -> one executed run notebook per cell -> the analysis.

- `spec`: a study file -> a validated grid of cells (`load_study`);
- `folder`: the study folder's state (each cell's status, `read_study`) and superseded/;
- `execute`: one notebook through papermill into an in-progress copy, renamed into place;
- `cell`: one cell, the same for every executor (`run_cell`);
- `executors` (serial) and `dask_executor`: how cells are spread over devices;
- `runner`: `run_study` on a given executor, then `build_report`;
- `plan`: a study's predicted time and energy here, before it runs;
- `colab`: where a Colab session keeps its records (Google Drive).
"""

from .cell import CellRun, Outcome, StudyOutcome, run_cell
from .colab import colab_folders
from .execute import ANALYSIS_NOTEBOOK, NOTEBOOKS_DIR, RUN_NOTEBOOK, execute_notebook
from .executors import EXECUTORS, Executor, SerialExecutor, check_executor, open_executor
from .folder import FolderState, cell_status, read_study, study_state
from .runner import build_report, check_cells_can_run, run_study
from .spec import (MAX_CELLS, STUDIES_DIR, Cell, Study, cell_name, default_study_file, load_study,
                   locate, study_file_for)

__all__ = ["ANALYSIS_NOTEBOOK", "EXECUTORS", "MAX_CELLS", "NOTEBOOKS_DIR", "RUN_NOTEBOOK",
           "STUDIES_DIR", "Cell", "CellRun", "Executor", "FolderState", "SerialExecutor", "Study",
           "Outcome", "StudyOutcome", "build_report", "cell_name", "colab_folders", "cell_status", "check_cells_can_run",
           "check_executor", "default_study_file", "execute_notebook", "load_study",
           "locate", "open_executor", "read_study", "run_cell", "run_study", "study_file_for",
           "study_state"]
