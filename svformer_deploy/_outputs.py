"""Who may replace or write into an output folder: the ``--force`` rule, applied to each command's declaration.

Each command declares what it writes, next to its code, as one :class:`Output` (``exporters/bundle.py``,
``energy/report.py``, ``analysis/report.py``, ``demo.py``, ``training/outputs.py``); this module knows no command.
Every output folder holds a marker, :data:`MARKER`, that says who wrote it and which entries are theirs::

    {"tool": "svformer-deploy", "kinds": [...], "what": {kind: words}, "version": ..., "written": ...,
     "files": [...]}

The rule, in short:

* a whole-folder output (``Output.whole``: a bundle, a report, a demo folder) replaces with ``--force`` only an
  empty folder or an earlier output of its own kind that holds nothing but the entries its marker lists (and
  what its commands add later, ``Output.later``): :func:`check_kind`;
* a command that writes its own files into a folder (train, finetune, evaluate) goes only into a new or empty
  folder or one that holds only outputs it may share a folder with (``Output.shares``), their files (the
  marker's ``files``), svformer-deploy output folders and a file browser's files: :func:`refuse_whole_output`;
* never the current folder, one above it, or a folder holding the command's input: :func:`check_replaceable`;
* a folder without a marker is a folder svformer-deploy did not write.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svformer_deploy._atomic import atomic_write_dir, atomic_write_json, json_text
from svformer_deploy.errors import OutputExistsError

__all__ = ["MARKER", "Output", "default_out", "output_kinds", "mark_output", "foreign_entries", "check_kind",
           "check_replaceable", "refuse_existing", "refuse_existing_file", "refuse_file_in_the_way",
           "refuse_whole_output", "run_folder_rule", "write_output_dir"]

MARKER = ".svformer-deploy.json"
"""The marker file of every output folder (see the module docstring)."""


@dataclass(frozen=True)
class Output:
    """What one command writes into its ``--out`` folder.

    ``kind`` is the marker's word for it, ``what`` the words for it in an error ("an export bundle (svformer-deploy
    export)"), ``command`` the command that writes it. ``whole``: the command builds the whole folder and
    ``--force`` replaces it; else it writes its own ``files`` into a folder, beside the outputs of the kinds in
    ``shares`` (kind -> its command, for :func:`run_folder_rule`). ``later``: name patterns of the entries its
    commands add to an earlier output afterwards (verification records in a bundle)."""

    kind: str
    what: str
    command: str
    whole: bool = True
    files: tuple[str, ...] = ()
    later: tuple[str, ...] = ()
    shares: Mapping[str, str] = field(default_factory=dict)


def default_out(source: str | os.PathLike, what: str) -> Path:
    """Where a command writes when no ``--out`` is given: a folder beside its input ``source``, named after it and
    ``what`` it makes (``export runs/best.pt --to nir`` -> ``runs/best-nir``). An earlier one there is refused
    without ``--force`` like any other ``--out``."""
    source = Path(source)
    return source.parent / f"{source.stem}-{what}"


def _marker(folder: Path) -> dict[str, Any] | None:
    """``folder``'s marker; None without one; {} for an unreadable one."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def output_kinds(folder: str | os.PathLike) -> list[str]:
    """The kinds of output its marker says svformer-deploy wrote in ``folder``; [] for anything else."""
    folder = Path(folder)
    marker = _marker(folder) if folder.is_dir() else None
    return _strings((marker or {}).get("kinds"))


def _described(folder: Path) -> str:
    """What ``folder`` is, in words, for an error message."""
    marker = _marker(folder) or {}
    what = marker.get("what") if isinstance(marker.get("what"), dict) else {}
    kinds = _strings(marker.get("kinds"))
    if kinds:
        return " and ".join(str(what.get(k) or f"an svformer-deploy output ({k})") for k in kinds)
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a folder svformer-deploy did not write (it holds {shown})"


def _new_marker(kinds: dict[str, str], files: list[str]) -> dict[str, Any]:
    from datetime import datetime, timezone

    from svformer_deploy import __version__

    return {"tool": "svformer-deploy", "kinds": list(kinds), "what": kinds, "version": __version__,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}


def mark_output(folder: str | os.PathLike, output: Output, files: tuple[str, ...] | None = None) -> Path:
    """Record (atomically) in ``folder``'s marker that it holds ``output``, and that ``files`` (default: the
    declared ``output.files``) are its entries; the folder is made if missing. For the commands that write their
    files into a folder one by one (train, finetune, evaluate, demo), before their first file."""
    folder = Path(folder)
    marker = (_marker(folder) if folder.is_dir() else None) or {}
    what = marker.get("what") if isinstance(marker.get("what"), dict) else {}
    kinds = {k: str(what.get(k, "")) for k in _strings(marker.get("kinds"))} | {output.kind: output.what}
    owned = dict.fromkeys([*_strings(marker.get("files")), *(output.files if files is None else files)])
    return atomic_write_json(folder / MARKER, _new_marker(kinds, list(owned)))


def _owned(folder: Path, output: Output) -> set[str]:
    """The entries of ``folder`` its marker gives to svformer-deploy, and ``output``'s own where it holds one."""
    marker = _marker(folder) or {}
    owned = set(_strings(marker.get("files")))
    return owned | set(output.files) if output.kind in _strings(marker.get("kinds")) else owned


def foreign_entries(folder: str | os.PathLike, output: Output) -> list[str]:
    """Entries of ``folder`` (an earlier ``output``) that its command did not write: neither listed by its marker
    nor added later by its commands (``output.later``). ``--force`` deletes the whole folder, so a user's file
    added to an earlier report or bundle must stop it."""
    folder = Path(folder)
    owned = _owned(folder, output)
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER and p.name not in owned
                  and not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in output.later))


def check_kind(out: str | os.PathLike, output: Output) -> None:
    """Refuse (:class:`OutputExistsError`, one line) to let ``--force`` replace the existing folder ``out`` unless
    it is empty or an earlier ``output`` (a whole-folder output: of its kind only, with nothing a user added; a
    command that writes its own files into a folder: one that holds its kind)."""
    out_path = Path(out)
    if not out_path.is_dir() or not any(out_path.iterdir()):
        return
    found = output_kinds(out_path)
    if (found == [output.kind]) if output.whole else (output.kind in found):
        if output.whole:
            extra = foreign_entries(out, output)
            if extra:
                shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
                raise OutputExistsError(f"--out {out} is {output.what} but also holds {shown}, which it did not "
                                        "write; --force would delete them. Move them out, choose another --out, or "
                                        "remove that folder yourself")
        return
    raise OutputExistsError(f"--out {out} is {_described(out_path)}; --force replaces only an empty folder or "
                            f"an earlier output of its kind, {output.what}. Choose another --out, or remove that "
                            "folder yourself")


_SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
"""Files a file browser leaves in any folder it shows: never a reason to refuse a run folder."""


def _temporary_of(name: str) -> str | None:
    """The file an atomic-write temporary ``.NAME.XXXXXXXX.tmp`` (left by a killed run) stands for."""
    if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
        return name[1:-4].rsplit(".", 1)[0]
    return None


def _not_from_runs(folder: Path, output: Output) -> list[str]:
    """Entries of ``folder`` that no svformer-deploy run wrote there: every entry must be one its marker lists
    (or ``output``'s own, where the folder holds its kind), the marker, a subfolder that is an svformer-deploy
    output itself (a ``budget-R`` fine-tuning run, a bundle exported into the run folder), an interrupted write
    of one of them, or a file browser's (:data:`_SYSTEM_FILES`)."""
    owned = _owned(folder, output)

    def ours(name: str) -> bool:
        return name in _SYSTEM_FILES or name == MARKER or name in owned or bool(output_kinds(folder / name))

    return sorted(p.name for p in folder.iterdir() if not ours(p.name) and not ours(_temporary_of(p.name) or p.name))


def run_folder_rule(output: Output) -> str:
    """The folders the command of ``output`` (one that writes its own files into a folder) writes into, in
    words: the one statement of :func:`refuse_whole_output`'s rule, for its errors and the commands' ``--out``
    help."""
    names = list(output.shares.values())
    listed = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
    return (f"a new or empty folder, or one holding only earlier {listed} outputs (and svformer-deploy output "
            "folders inside it)")


def refuse_whole_output(out: str | os.PathLike, output: Output) -> None:
    """Refuse (before any work, with or without ``--force``) to let the command of ``output`` (one that writes
    its own files into a folder) write them into a folder it may not share (:func:`run_folder_rule`): one holding
    an output of a kind not in ``output.shares`` (another command's whole-folder output, whose own ``--force``
    would then no longer replace it; a run writing the same file names), or any entry no svformer-deploy run
    wrote there (a user's files, a lone checkpoint: :func:`_not_from_runs`). Whether an earlier output of its own
    kind may be replaced is ``--force``'s business (the caller's)."""
    out_path = Path(out)
    if not out_path.is_dir():
        return
    command = f"svformer-deploy {output.command}"
    if any(k not in output.shares for k in output_kinds(out_path)):
        raise OutputExistsError(f"--out {out} is {_described(out_path)}; {command} writes only into "
                                f"{run_folder_rule(output)}. Choose another --out, or remove that folder yourself")
    foreign = _not_from_runs(out_path, output)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f", ... ({len(foreign)} entries)" if len(foreign) > 3 else "")
        raise OutputExistsError(f"--out {out} holds {shown}, which svformer-deploy train/finetune/evaluate did not "
                                f"write; {command} writes only into {run_folder_rule(output)}. Choose another --out, "
                                "or move those files out of it")


def check_replaceable(out: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (),
                      output: Output | None = None) -> None:
    """Refuse (:class:`OutputExistsError`) to let ``--force`` delete an existing ``out`` that is the current
    folder or one above it, that holds (or is) one of the command's ``inputs`` (its checkpoint, its data), or,
    for a folder ``output``, that is a file where the command writes a folder or a folder that is neither empty
    nor an earlier ``output`` (:func:`check_kind`)."""
    target = Path(out).resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputExistsError(f"--out {out} is the current folder or a folder above it; --force would delete "
                                "everything in it. Choose a new folder for --out")
    if output is not None and not target.is_dir():
        raise OutputExistsError(f"--out {out} is a file, and this command writes a folder; --force replaces only an "
                                "empty folder or an earlier output folder of the same command. Choose another --out")
    for item in inputs:
        path = Path(item).resolve()
        if path == target or target in path.parents:
            raise OutputExistsError(f"--out {out} holds this command's input {item}; --force would delete it. "
                                    "Choose another --out")
    if output is not None:
        check_kind(out, output)


def refuse_existing(out: str | os.PathLike, force: bool = False, *, inputs: tuple[str | os.PathLike, ...] = (),
                    output: Output | None = None) -> None:
    """Raise :class:`OutputExistsError` if ``out`` exists and ``force`` is not set (call it before long work);
    raise in any case if replacing ``out`` would destroy more than an earlier ``output`` (:func:`check_replaceable`),
    so that the message never suggests a ``--force`` that would be refused."""
    if not Path(out).exists():
        return
    check_replaceable(out, inputs=inputs, output=output)
    if not force:
        raise OutputExistsError(f"{out} already exists; choose another --out or pass --force to replace it")


def refuse_existing_file(out: str | os.PathLike, force: bool, *, kind: str, is_kind: Callable[[Path], bool],
                         inputs: tuple[str | os.PathLike, ...] = ()) -> None:
    """The rule of :func:`check_kind` for a command that writes one file (a checkpoint, a JSON summary): an
    existing ``out`` is refused unless ``force``, and even with ``force`` unless ``is_kind(out)`` says it is an
    earlier output of ``kind`` (words, e.g. "svformer-deploy checkpoint"); never a folder or one of ``inputs``."""
    path = Path(out)
    if not path.exists():
        return
    if path.is_dir():
        raise OutputExistsError(f"--out {out} is a folder, and this command writes a file there; choose another "
                                "--out")
    check_replaceable(out, inputs=inputs)
    if not is_kind(path):
        raise OutputExistsError(f"{out} exists and is not an earlier {kind}; --force replaces only that. Choose "
                                "another path, or remove that file yourself")
    if not force:
        raise OutputExistsError(f"{out} already exists; choose another path or pass --force to replace it")


def refuse_file_in_the_way(out: str | os.PathLike) -> None:
    """Raise :class:`OutputExistsError` when the output folder ``out`` cannot be made because ``out`` or the
    nearest of its parents that exists is a file (call it before long work: ``mkdir`` would fail only after)."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies below the file {p}"
                raise OutputExistsError(f"--out {out} {where}, and this command writes a folder there; choose "
                                        "another --out")
            return


def write_output_dir(out: str | os.PathLike, build: Callable[[Path], None], output: Output,
                     force: bool = False) -> Path:
    """Build the whole-folder ``output`` at ``out`` atomically (:func:`svformer_deploy._atomic.atomic_write_dir`)
    with its :data:`MARKER` listing the entries ``build`` wrote. An existing ``out`` is refused unless ``force``,
    and with ``force`` replaced only when :func:`check_kind` allows it, checked before the build and again
    before the rename."""
    refuse_existing(out, force, output=output)

    def marked(tmp: Path) -> None:
        build(tmp)
        files = sorted(p.name for p in tmp.iterdir())  # what --force may delete later, and nothing else
        (tmp / MARKER).write_text(json_text(_new_marker({output.kind: output.what}, files)) + "\n",
                                  encoding="utf-8")

    return atomic_write_dir(out, marked, replace=lambda: refuse_existing(out, force, output=output))
