"""One build hook; the project's metadata and package list stay in pyproject.toml.

pyproject.toml maps the top-level notebooks/ and studies/ folders into the wheel as
energy_lib.notebooks and energy_lib.studies, so an installed wheel can run a study without a
checkout (energy_lib/bundled.py). setuptools would also ship every .py file there as a module,
and notebooks/ holds the notebooks' jupytext twins (run.py, analysis.py, colab.py): scripts,
not modules (importing colab.py would clone a repository and run pip). These two packages
therefore carry only their package data (*.ipynb, *.toml); tests/test_install.py lists the
wheel's files to check it.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_ONLY = frozenset({"energy_lib.notebooks", "energy_lib.studies"})


class BuildPyDataOnly(build_py):
    """build_py that finds no modules in the data-only packages (their data files still go)."""

    def find_package_modules(self, package, package_dir):
        if package in DATA_ONLY:
            return []
        return super().find_package_modules(package, package_dir)


setup(cmdclass={"build_py": BuildPyDataOnly})
