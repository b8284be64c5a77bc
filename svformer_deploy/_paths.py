"""User paths, resolved once at the boundary (CLI commands and library entry points).

Every path a user passes (checkpoint, ``--out``, ``--data``, bundle) goes through :func:`user_path` before it
reaches a subprocess, a worker, a manifest or a report, so nothing downstream depends on the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_path", "require_file", "read_user_text"]


def user_path(path: str | os.PathLike) -> Path:
    """``Path(path).expanduser().resolve()``: absolute, ``~`` expanded, ``..`` and symlinks resolved."""
    return Path(path).expanduser().resolve()


def require_file(path: str | os.PathLike, what: str, fix: str, error: type[Exception]) -> Path:
    """``Path(path)`` when it is a file; else ``error("<what> <path> does not exist; <fix>")``, or ``... is a
    folder, not a file; <fix>`` for a folder, so a user told to pass a file learns which of the two went wrong."""
    p = Path(path)
    if p.is_file():
        return p
    problem = "is a folder, not a file" if p.is_dir() else "does not exist"
    raise error(f"{what} {p} {problem}; {fix}")


def read_user_text(path: str | os.PathLike) -> str:
    """The text of a file a user gives (CSV, JSON, list files), decoded as UTF-8 with or without the byte-order
    mark that Excel ("CSV UTF-8") and Windows Notepad put first: a BOM never becomes part of a column name."""
    return Path(path).read_text(encoding="utf-8-sig")
