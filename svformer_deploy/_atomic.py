"""Atomic writes of files and directories: build under a temporary name next to the target, then rename.

A failed write leaves neither a partial file nor a partial directory behind, and never damages an existing
output; written files and directories get the permissions ``open()`` / ``mkdir()`` would give (not mkstemp's 0600).

Every output folder carries a marker, :data:`MARKER` (``.svformer-deploy.json``: the kinds of output written
there, the tool version, the time), written inside the atomic build. ``--force`` replaces only an empty folder or
an earlier output of the same kind (:func:`check_kind`): the marker says which, and folders written before the
marker existed are recognised by their kind's own files (:data:`OUTPUT_KINDS`). A whole-folder output's marker
lists the entries its command wrote; anything a user added since stops ``--force`` (:func:`foreign_entries`).
Anything else -- a user's folder, another command's output -- is refused with one line. The commands that write
their own files into a folder (train, finetune, evaluate) go only into a new or empty folder or one holding only
earlier outputs they may share a folder with (:func:`run_folder_rule`: train and finetune never share one), with or
without ``--force`` (:func:`refuse_whole_output`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from svformer_deploy.errors import OutputExistsError

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_csv", "atomic_write_dir", "json_text", "refuse_existing",
           "check_replaceable", "chmod_as_created", "refuse_file_in_the_way", "MARKER", "OUTPUT_KINDS", "output_kinds",
           "check_kind", "mark_output", "refuse_existing_file", "foreign_entries", "refuse_whole_output",
           "RUN_FOLDER_SHARES", "run_folder_rule"]

MARKER = ".svformer-deploy.json"
"""The marker file of every output folder: ``{"tool": "svformer-deploy", "kinds": [...], "version": ..., "written": ...,
"files": [...]}``; ``files`` (the entries a whole-folder output wrote) is what ``--force`` may delete."""


def _report_files(*required: str) -> Callable[[Path, set[str]], bool]:
    """A report folder: the ``required`` files, and nothing but tables, JSON, markdown and figures beside them."""
    def recognise(folder: Path, names: set[str]) -> bool:
        return set(required) <= names and all(
            (folder / n).is_file() and Path(n).suffix in {".csv", ".json", ".md", ".png"} for n in names)
    return recognise


def _bundle_files(folder: Path, names: set[str]) -> bool:
    """An export bundle: ``manifest.json`` and only the files it lists, beside JSON records (verification)."""
    import json

    if "manifest.json" not in names:
        return False
    try:
        listed = set(json.loads((folder / "manifest.json").read_text(encoding="utf-8-sig")).get("files") or {})
    except (OSError, ValueError, AttributeError):
        return False
    return all(n in listed or n.endswith(".json") for n in names)


def _demo_files(folder: Path, names: set[str]) -> bool:
    """A demo folder: ``demo.json``, the copied checkpoint and one subfolder per step."""
    return "demo.json" in names and all(n in {"demo.json", "checkpoint.pt"} or (folder / n).is_dir() for n in names)


def _run_files(finetune: bool) -> Callable[[Path, set[str]], bool]:
    """A training (``finetune`` False) or fine-tuning run: ``last.pt`` and ``metrics.csv``; a fine-tuning run
    also has ``finetune.json`` or ``finetuned.pt`` (or is the folder of a budget curve, ``budget_curve.csv``)."""
    def recognise(folder: Path, names: set[str]) -> bool:
        ours = bool({"finetune.json", "finetuned.pt"} & names)
        if finetune and "budget_curve.csv" in names:
            return True
        return {"last.pt", "metrics.csv"} <= names and ours == finetune
    return recognise


_ENERGY_REPORT = ("report.md", "summary.json", "per_layer.csv", "per_video.csv")
_SPARSITY_REPORT = ("firing_rates.csv", "predictions.csv", "summary.json")

#: kind -> (what it is, in words; whether its command replaces the whole folder (True) or only its own files in
#: it (False); how to recognise such a folder written before :data:`MARKER` existed; the files that always
#: identify a fresh whole-folder output of the kind, for :func:`atomic_write_dir` callers that name no kind).
OUTPUT_KINDS: dict[str, tuple[str, bool, Callable[[Path, set[str]], bool], tuple[str, ...]]] = {
    "export": ("an export bundle (svformer-deploy export)", True, _bundle_files, ("manifest.json",)),
    "energy-report": ("an energy report (svformer-deploy energy report)", True, _report_files(*_ENERGY_REPORT),
                      _ENERGY_REPORT),
    "sparsity-report": ("a sparsity report (svformer-deploy sparsity)", True, _report_files(*_SPARSITY_REPORT),
                        _SPARSITY_REPORT),
    "demo": ("a demo folder (svformer-deploy demo)", True, _demo_files, ("demo.json",)),
    "chip-mapping": ("a chip mapping (svformer-deploy map)", True, _report_files("mapping.json", "report.md"),
                     ("mapping.json", "layers.csv", "cores.csv")),
    "train": ("a training run (svformer-deploy train)", False, _run_files(finetune=False), ()),
    "finetune": ("a fine-tuning run (svformer-deploy finetune)", False, _run_files(finetune=True), ()),
    "evaluation": ("evaluation results (svformer-deploy evaluate)", False,
                   lambda folder, names: "eval.json" in names, ()),
}


def _marker_kinds(folder: Path) -> list[str] | None:
    """The kinds recorded in ``folder``'s marker; None without a marker; [] for an unreadable one."""
    import json

    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        kinds = json.loads(marker.read_text(encoding="utf-8-sig")).get("kinds")
    except (OSError, ValueError, AttributeError):
        return []
    return [k for k in kinds if k in OUTPUT_KINDS] if isinstance(kinds, list) else []


def output_kinds(folder: str | os.PathLike) -> list[str]:
    """The kinds of output (keys of :data:`OUTPUT_KINDS`) this tool wrote in ``folder``: those its marker records,
    else (a folder written before the marker existed) those its files identify; [] for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    recorded = _marker_kinds(folder)
    if recorded is not None:
        return recorded
    names = {p.name for p in folder.iterdir()}
    return [kind for kind, (_, _, recognise, _) in OUTPUT_KINDS.items() if recognise(folder, names)]


_WRITTEN_LATER: dict[str, Callable[[str], bool]] = {
    "export": lambda name: name.endswith(".json"),  # verification records `verify` writes into a bundle later
    "chip-mapping": lambda name: name.startswith("sanafe"),  # `verify MAPPING --with sanafe` writes these later
}
"""Entries a kind's commands add to an existing output after it was written (not in its marker's ``files``)."""


def _marker_files(folder: Path) -> list[str] | None:
    """The entries the marker of ``folder`` records as written by its command; None when it records none."""
    import json

    try:
        files = json.loads((folder / MARKER).read_text(encoding="utf-8-sig")).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else None


def foreign_entries(folder: str | os.PathLike, kind: str) -> list[str]:
    """Entries of ``folder`` (an output of the whole-folder ``kind``) that its command did not write: those not in
    its marker's ``files`` or, for a folder whose marker lists none, those its kind's files do not account for
    (the folder as a whole is then checked by the kind's recogniser). ``--force`` deletes the whole folder, so a
    user's file added to an earlier report or bundle must stop it."""
    folder = Path(folder)
    names = {p.name for p in folder.iterdir()} - {MARKER}
    files = _marker_files(folder)
    if files is not None:
        later = _WRITTEN_LATER.get(kind, lambda name: False)
        return sorted(n for n in names - set(files) if not later(n))
    return [] if OUTPUT_KINDS[kind][2](folder, names) else sorted(names)


def _described(folder: Path) -> str:
    """What ``folder`` is, in words, for an error message."""
    kinds = output_kinds(folder)
    if kinds:
        return " and ".join(OUTPUT_KINDS[k][0] for k in kinds)
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a folder svformer-deploy did not write (it holds {shown})"


def check_kind(out: str | os.PathLike, kind: str | None) -> None:
    """Refuse (:class:`OutputExistsError`, one line) to let ``--force`` replace the existing folder ``out`` unless
    it is empty or an earlier output of ``kind`` (for a whole-folder kind: of that kind only; for a command that
    writes its own files into a folder: one that holds that kind). ``kind`` None accepts any whole-folder output
    (:func:`atomic_write_dir` checks the real kind again once its build shows it)."""
    out_path = Path(out)
    if not out_path.is_dir() or not any(out_path.iterdir()):
        return
    found = output_kinds(out_path)
    if kind is None:
        if found and all(OUTPUT_KINDS[k][1] for k in found):
            _refuse_foreign(out, found[0])
            return
        wanted = "an earlier output folder of this command"
    else:
        label, whole, _, _ = OUTPUT_KINDS[kind]
        if (found == [kind]) if whole else (kind in found):
            if whole:
                _refuse_foreign(out, kind)
            return
        wanted = f"an earlier output of its kind, {label}"
    raise OutputExistsError(f"--out {out} is {_described(out_path)}; --force replaces only an empty folder or "
                            f"{wanted}. Choose another --out, or remove that folder yourself")


def _refuse_foreign(out: str | os.PathLike, kind: str) -> None:
    """Refuse to let ``--force`` delete an earlier output of ``kind`` that also holds entries its command did not
    write (:func:`foreign_entries`)."""
    extra = foreign_entries(out, kind)
    if extra:
        shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
        raise OutputExistsError(f"--out {out} is {OUTPUT_KINDS[kind][0]} but also holds {shown}, which it did not "
                                "write; --force would delete them. Move them out, choose another --out, or remove "
                                "that folder yourself")


_RUN_ENTRIES: dict[str, Callable[[str], bool]] = {
    "train": lambda name: name in {"last.pt", "best.pt", "metrics.csv", "metrics.json"},
    "finetune": lambda name: name in {"last.pt", "finetuned.pt", "metrics.csv", "metrics.json", "finetune.json",
                                      "budget_curve.csv", "budget_curve.png"},
    "evaluation": lambda name: name in {"eval.json", "confusion.png", "predictions.csv"},
}
"""The files each command that writes its own files into a folder writes there (besides the ``budget-R``
folders of ``finetune --spike-budget``, each a fine-tuning run of its own)."""
_SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
"""Files a file browser leaves in any folder it shows: never a reason to refuse a run folder."""


def _temporary_of(name: str) -> str | None:
    """The file an :func:`atomic_write` temporary ``.NAME.XXXXXXXX.tmp`` (left by a killed run) stands for."""
    if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
        return name[1:-4].rsplit(".", 1)[0]
    return None


def _not_from_runs(folder: Path) -> list[str]:
    """Entries of ``folder`` that none of train, finetune and evaluate wrote: every entry must be one the kinds the
    folder holds (:func:`output_kinds`: its marker, or its files for a folder from before the marker) write
    (:data:`_RUN_ENTRIES`), the marker, a subfolder that is an svformer-deploy output itself (a ``budget-R``
    fine-tuning run, a bundle exported into the run folder), an interrupted write of one of them, or a file
    browser's (:data:`_SYSTEM_FILES`)."""
    held = [_RUN_ENTRIES[k] for k in output_kinds(folder) if k in _RUN_ENTRIES]

    def ours(name: str) -> bool:
        if name in _SYSTEM_FILES or name == MARKER or any(written(name) for written in held):
            return True
        return bool(output_kinds(folder / name))  # [] for a file or a folder svformer-deploy did not write

    return sorted(p.name for p in folder.iterdir()
                  if not ours(p.name) and not ours(_temporary_of(p.name) or p.name))


RUN_FOLDER_SHARES: dict[str, tuple[str, ...]] = {
    "train": ("train", "evaluation"),
    "finetune": ("finetune", "evaluation"),
    "evaluation": ("train", "finetune", "evaluation"),
}
"""The run kinds a folder may already hold for each command that writes its own files into a folder: train and
finetune both write ``last.pt`` and ``metrics.csv``/``.json``, so neither goes into the other's folder; evaluate's
files collide with neither."""
_COMMAND_OF = {"train": "train", "finetune": "finetune", "evaluation": "evaluate"}


def run_folder_rule(kind: str) -> str:
    """The folders the command of ``kind`` (train, finetune, evaluation) writes into, in words: the one statement
    of :func:`refuse_whole_output`'s rule, for its errors and the commands' ``--out`` help."""
    names = [_COMMAND_OF[k] for k in RUN_FOLDER_SHARES[kind]]
    listed = " and ".join([", ".join(names[:-1]), names[-1]])
    return (f"a new or empty folder, or one holding only earlier {listed} outputs (and svformer-deploy output "
            "folders inside it)")


def refuse_whole_output(out: str | os.PathLike, kind: str) -> None:
    """Refuse (before any work, with or without ``--force``) to let a command that writes its own files into a
    folder (``kind``: train, finetune, evaluation) write them into a folder it may not share
    (:func:`run_folder_rule`):

    * another command's whole-folder output (an export bundle, a report, a demo folder): its files would change
      that output, which its own ``--force`` would then no longer replace;
    * a run of a kind it may not share a folder with (:data:`RUN_FOLDER_SHARES`: train and finetune write the same
      file names);
    * a folder holding any entry that train, finetune or evaluate did not write there (a user's files, a lone
      checkpoint, ...; :func:`_not_from_runs`): its files would land among them, or over one of the same name.

    Whether an earlier output of ``kind`` itself may be replaced is ``--force``'s business (the caller's)."""
    out_path = Path(out)
    if not out_path.is_dir():
        return
    command = f"svformer-deploy {_COMMAND_OF[kind]}"
    other = [k for k in output_kinds(out_path) if OUTPUT_KINDS[k][1] or k not in RUN_FOLDER_SHARES[kind]]
    if other:
        raise OutputExistsError(f"--out {out} is {_described(out_path)}; {command} writes only into "
                                f"{run_folder_rule(kind)}. Choose another --out, or remove that folder yourself")
    foreign = _not_from_runs(out_path)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f", ... ({len(foreign)} entries)" if len(foreign) > 3 else "")
        raise OutputExistsError(f"--out {out} holds {shown}, which svformer-deploy train/finetune/evaluate did not "
                                f"write; {command} writes only into {run_folder_rule(kind)}. Choose another --out, "
                                "or move those files out of it")


def _marker(kinds: list[str], files: list[str] | None = None) -> dict[str, Any]:
    from datetime import datetime, timezone

    from svformer_deploy import __version__

    d: dict[str, Any] = {"tool": "svformer-deploy", "kinds": kinds, "version": __version__,
                         "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if files is not None:
        d["files"] = files
    return d


def mark_output(folder: str | os.PathLike, kind: str) -> Path:
    """Record (atomically) in ``folder``'s marker that it holds an output of ``kind``; the folder is made if
    missing. For the commands that write their own files into a folder (train, finetune, evaluate, demo)."""
    folder = Path(folder)
    kinds = _marker_kinds(folder) if folder.is_dir() else None
    kinds = [*(kinds or output_kinds(folder)), kind]
    return atomic_write_json(folder / MARKER, _marker(list(dict.fromkeys(kinds))))


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


def refuse_existing(out: str | os.PathLike, force: bool = False, *, inputs: tuple[str | os.PathLike, ...] = (),
                    folder: bool = False, kind: str | None = None) -> None:
    """Raise :class:`OutputExistsError` if ``out`` exists and ``force`` is not set (call it before long work);
    raise in any case if replacing ``out`` would destroy more than an earlier output of ``kind``
    (:func:`check_replaceable`), so that the message never suggests a ``--force`` that would be refused."""
    if not Path(out).exists():
        return
    check_replaceable(out, inputs=inputs, folder=folder, kind=kind)
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


def check_replaceable(out: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = (),
                      folder: bool = False, kind: str | None = None) -> None:
    """Refuse (:class:`OutputExistsError`) to let ``--force`` delete an existing ``out`` that is the current
    folder or one above it, that holds (or is) one of the command's ``inputs`` (its checkpoint, its data), or,
    with ``folder``, that is a file where the command writes a folder (a checkpoint, a file of a bundle) or a
    folder that is neither empty nor an earlier output of ``kind`` (:func:`check_kind`)."""
    target = Path(out).resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputExistsError(f"--out {out} is the current folder or a folder above it; --force would delete "
                                "everything in it. Choose a new folder for --out")
    if folder and not target.is_dir():
        raise OutputExistsError(f"--out {out} is a file, and this command writes a folder; --force replaces only an "
                                "empty folder or an earlier output folder of the same command. Choose another --out")
    for item in inputs:
        path = Path(item).resolve()
        if path == target or target in path.parents:
            raise OutputExistsError(f"--out {out} holds this command's input {item}; --force would delete it. "
                                    "Choose another --out")
    if folder:
        check_kind(out, kind)


def _built_kind(tmp: Path) -> str:
    """The whole-folder kind the freshly built folder ``tmp`` is, from the files that identify it (for callers
    that name none)."""
    names = {p.name for p in tmp.iterdir()}
    kinds = [k for k, (_, whole, _, signature) in OUTPUT_KINDS.items() if whole and set(signature) <= names]
    if len(kinds) != 1:
        raise ValueError(f"atomic_write_dir: cannot tell the kind of output from its files {sorted(names)}; "
                         f"pass kind= (one of {sorted(OUTPUT_KINDS)})")
    return kinds[0]


def atomic_write_dir(out: str | os.PathLike, build: Callable[[Path], None], force: bool = False,
                     kind: str | None = None) -> Path:
    """Run ``build(tmp_dir)`` in a fresh directory next to ``out``, write the :data:`MARKER` of ``kind`` (default:
    the kind its files show) into it, then rename it onto ``out``.

    An existing ``out`` raises :class:`OutputExistsError` unless ``force``; with ``force`` it is replaced only
    if it is empty or an earlier output of the same kind (:func:`check_kind`, checked before and again after
    ``build``), and only after ``build`` succeeded. On any error the temporary directory is removed and ``out``
    is untouched.
    """
    out = Path(out)
    refuse_existing(out, force, folder=True, kind=kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        chmod_as_created(tmp, 0o777)  # mkdtemp makes 0700; a bundle is an ordinary shareable directory
        build(tmp)
        kind = kind or _built_kind(tmp)
        files = sorted(p.name for p in tmp.iterdir())  # what --force may delete later, and nothing else
        (tmp / MARKER).write_text(json_text(_marker([kind], files)) + "\n", encoding="utf-8")
        if out.exists():
            refuse_existing(out, force, folder=True, kind=kind)
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
