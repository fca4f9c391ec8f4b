"""energy_lib: the importable core of the CNN training-energy study.

Notebooks and the CLI only call into this package; nothing here imports a notebook or the CLI.
"""

__version__ = "0.1.0"

from .config import RunConfig  # noqa: E402
from .errors import (ConfigError, DatasetNotFound, EnergyStudyError, StudyError,  # noqa: E402
                     WriteError)

from .moved_modules import install as _serve_moved_modules  # noqa: E402

_serve_moved_modules()  # old import paths that committed lab records use (moved_modules.MOVED)

__all__ = ["ConfigError", "DatasetNotFound", "EnergyStudyError", "RunConfig", "StudyError", "WriteError",
           "__version__"]
