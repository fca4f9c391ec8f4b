"""`python -m energy_lib ...` is the same as the `energy-study` console script."""

import sys

from .cli import main

sys.exit(main())
