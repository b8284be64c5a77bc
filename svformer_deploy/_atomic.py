"""Atomic writes of files and directories: build under a temporary name next to the target, then rename.

A failed write leaves neither a partial file nor a partial directory behind, and never damages an existing
output; written files and directories get the permissions ``open()`` / ``mkdir()`` would give (not mkstemp's 0600).
Who may replace an existing output is not this module's business: :mod:`svformer_deploy._outputs`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from svformer_deploy.errors import OutputExistsError

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_csv", "atomic_write_dir", "json_text",
           "chmod_as_created"]


def chmod_as_created(path: str | os.PathLike, mode: int) -> None:
    """Give ``path`` the permissions ``open()`` (``mode`` 0o666) or ``mkdir()`` (0o777) would have given it:
    ``mode & ~umask``, for files and folders made by ``mkstemp`` / ``mkdtemp`` (0600 / 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in the target's folder, then rename it onto ``path``.

    On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        chmod_as_created(tmp, 0o666)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN / +-inf float (Python or NumPy, at any depth) replaced by ``None``."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite_or_null(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def json_text(obj: Any, indent: int | None = 2, **kwargs: Any) -> str:
    """Strict JSON text of ``obj``: missing values (NaN, +-inf) become ``null`` and ``allow_nan=False``, so every
    JSON reader accepts the result. The one JSON encoder of the package's output files."""
    import json

    return json.dumps(_finite_or_null(obj), indent=indent, allow_nan=False, ensure_ascii=False, **kwargs)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON (:func:`json_text`, UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json_text(obj, indent) + "\n", encoding="utf-8"))


def atomic_write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> Path:
    """Write ``rows`` as CSV (UTF-8, the ``csv`` module's quoting: commas, quotes and newlines in values survive)
    atomically. Columns: ``fieldnames``, else every key in order of first appearance (a missing value is empty)."""
    import csv

    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def atomic_write_dir(out: str | os.PathLike, build: Callable[[Path], None],
                     replace: Callable[[], None] | None = None) -> Path:
    """Run ``build(tmp_dir)`` in a fresh directory next to ``out``, then rename it onto ``out``.

    An ``out`` that exists when the build is done is replaced only if ``replace`` is given: it is called first
    and may raise to keep ``out`` (else :class:`OutputExistsError`). On any error the temporary directory is
    removed and ``out`` is untouched.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        chmod_as_created(tmp, 0o777)  # mkdtemp makes 0700; a bundle is an ordinary shareable directory
        build(tmp)
        if out.exists():
            if replace is None:
                raise OutputExistsError(f"{out} already exists; choose another --out")
            replace()
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
