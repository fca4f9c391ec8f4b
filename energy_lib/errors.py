"""Exception families. Each is raised early with a message naming the field, the bad value and
what is allowed; the CLI prints the message (one line) instead of a traceback."""


class EnergyStudyError(Exception):
    """Base of every user-facing error of this project."""


class ConfigError(EnergyStudyError, ValueError):
    """A run parameter is unknown, has the wrong type, or a value that is not allowed."""


class DatasetNotFound(EnergyStudyError, FileNotFoundError):
    """The dataset is neither on disk nor downloadable."""


class StudyError(EnergyStudyError):
    """A study file is missing, malformed, or describes an impossible grid."""


class WriteError(EnergyStudyError):
    """A folder or file the study must write cannot be written (read-only, not a folder, ...)."""


class TrackerError(EnergyStudyError, ValueError):
    """An `energy_lib.Tracker` used out of order: an epoch inside an epoch, a window after the
    tracker closed."""


class BudgetExceeded(EnergyStudyError):
    """A Tracker's prediction after epoch 1 exceeds its `budget_wh` or `budget_s`: the loop
    stops here, the record is written and marked `stopped`. Catch it to go on after the stop."""

    def __init__(self, message: str, predicted_wh: float, predicted_s: float) -> None:
        super().__init__(message)
        self.predicted_wh = predicted_wh
        self.predicted_s = predicted_s


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM: what `kill`, `timeout`, SLURM and systemd send).
    A KeyboardInterrupt, so every path that cleans up after Ctrl-C cleans up after it too."""
