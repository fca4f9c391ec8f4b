"""Where a Colab session keeps its lab records: Google Drive by default, because a Colab
runtime that disconnects loses its local files, and with them every finished cell. With the
records on Drive, Run all after a reconnect resumes: the runner skips finished cells."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

#: Where Colab mounts Google Drive.
DRIVE_MOUNT = "/content/drive"


def colab_folders(keep_on_drive: bool, drive_folder: str, runs_root: str | Path,
                  report_root: str | Path) -> tuple[Path | str, Path | str, str]:
    """(runs root, report root, one line saying where they are). On Colab with
    `keep_on_drive`, Drive is mounted and both go under `drive_folder`; elsewhere (papermill,
    JupyterLab) or without it, the given roots, and the line says what that means."""
    if not keep_on_drive:
        return runs_root, report_root, (
            f"records in {runs_root}/ on this runtime: a Colab runtime that disconnects loses "
            "them (keep_on_drive keeps them in Google Drive)")
    try:
        from google.colab import drive
    except ImportError:
        return runs_root, report_root, (
            f"not on Colab: records in {runs_root}/ here (keep_on_drive applies on Colab only)")
    folder = str(drive_folder).strip()
    if not folder.startswith(DRIVE_MOUNT + "/"):
        raise ConfigError(f"drive_folder={drive_folder!r} must be a folder under {DRIVE_MOUNT}/, "
                          f"e.g. {DRIVE_MOUNT}/MyDrive/energy-study")
    drive.mount(DRIVE_MOUNT)
    return Path(folder) / "runs", Path(folder) / "report", (
        f"records and report in Google Drive ({folder}): after a reconnect, Run all resumes "
        "from the finished cells")
