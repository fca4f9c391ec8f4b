"""Files shipped with the package: the data files (energy_lib/data/, each with a comment header
that cites its source), and the notebooks and example studies, which a wheel carries as
energy_lib/notebooks and energy_lib/studies (pyproject.toml) and a checkout keeps in its
top-level notebooks/ and studies/."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

#: The checkout the package was imported from (an editable install, or a clone on sys.path);
#: for an installed wheel, the folder above the package (site-packages), which has no
#: notebooks/ or studies/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of a bundled CSV, skipping its leading `#` comment lines."""
    text = resources.files("energy_lib").joinpath(f"data/{name}").read_text(encoding="utf-8")
    body = "".join(line for line in text.splitlines(True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(body)))


def shipped(folder: str) -> Path:
    """`notebooks` or `studies` as this install has them: inside the package when installed
    from a wheel, else the checkout's top-level folder."""
    inside = Path(str(resources.files("energy_lib").joinpath(folder)))
    return inside if inside.is_dir() else PROJECT_ROOT / folder


def is_shipped(path: Path) -> bool:
    """Whether `path` lies inside the installed package (a bundled study, not the user's)."""
    package = Path(str(resources.files("energy_lib"))).resolve()
    return Path(path).resolve().is_relative_to(package)


#: What `energy-study init` copies: the notebooks a user opens, and every example study.
STARTER = {"notebooks": ("run.ipynb", "analysis.ipynb"), "studies": ("*.toml",)}


def write_starter(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """Copy the starter files into `folder` (made if missing): (written, kept). A file that is
    already there is kept as it is, never replaced: it may be the user's own edit."""
    import shutil

    from .files import check_not_lab_records, check_writable, create_new

    folder = Path(folder).expanduser()
    check_not_lab_records(folder, "init folder")
    check_writable(folder, "init")
    written, kept = [], []
    for part, patterns in STARTER.items():
        sources = sorted({p for pattern in patterns for p in shipped(part).glob(pattern)})
        for source in sources:
            target = folder / part / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                create_new(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
                written.append(target)
            except FileExistsError:
                kept.append(target)
    return written, kept
