"""energy_lib: the importable core of the CNN training-energy study.

Notebooks and the CLI only call into this package; nothing here imports a notebook or the CLI.
"""

__version__ = "0.1.0"

from .config import RunConfig  # noqa: E402
from .errors import (ConfigError, DatasetNotFound, EnergyStudyError, StudyError,  # noqa: E402
                     WriteError)

__all__ = ["ConfigError", "DatasetNotFound", "EnergyStudyError", "RunConfig", "StudyError", "WriteError",
           "__version__"]
