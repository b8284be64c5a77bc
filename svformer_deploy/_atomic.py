"""Atomic writes of files and directories: build under a temporary name next to the target, then rename.

A failed write leaves neither a partial file nor a partial directory behind, and never damages an existing
output; written files and directories get the permissions ``open()`` / ``mkdir()`` would give (not mkstemp's 0600).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from svformer_deploy.errors import OutputExistsError

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_dir"]


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    import json

    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=indent)))


def atomic_write_dir(out: str | os.PathLike, build: Callable[[Path], None], force: bool = False) -> Path:
    """Run ``build(tmp_dir)`` in a fresh directory next to ``out``, then rename it onto ``out``.

    An existing ``out`` raises :class:`OutputExistsError` unless ``force``; with ``force`` it is replaced only
    after ``build`` succeeded. On any error the temporary directory is removed and ``out`` is untouched.
    """
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists; choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is an ordinary shareable directory
        build(tmp)
        if out.exists():
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
