"""The fused CPU PLIF kernels (``csrc/plif.cpp``): built with the local C++ compiler on first use, then cached.

The library is compiled once per (source, torch version, Python version) into
``~/.cache/svformer-deploy/ext/`` (``$SVFORMER_EXT_DIR`` overrides the folder) with ``-O3 -fopenmp
-ffp-contract=off`` (no fused multiply-add, so every operation rounds as the pure-torch reference does) and
registers ``torch.ops.svformer_deploy.plif_forward`` / ``plif_backward`` / ``plif_forward_bits`` (and the spike
packing ops), each with a fake (meta) implementation (:func:`register_fakes`: the shapes and dtypes of its outputs),
so that ``torch.compile`` traces them as operators instead of breaking its graph. Without a compiler or ninja, or
with ``SVFORMER_NO_EXT=1``, :func:`fused_plif_available` is False and the neurons use the pure-torch
implementation (one warning per process).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

__all__ = ["fused_plif_available", "extension_dir", "register_fakes", "SOURCE"]

SOURCE = Path(__file__).with_name("csrc") / "plif.cpp"
CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]


def extension_dir() -> Path:
    """Build folder of the extension: one per source text, compiler flags, torch and Python version."""
    root = Path(os.environ.get("SVFORMER_EXT_DIR") or Path.home() / ".cache" / "svformer-deploy" / "ext")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return root / f"plif-{key}-torch{torch.__version__.replace('+', '_')}-{py}"


def _put_ninja_on_path() -> None:
    """torch looks for ``ninja`` on PATH; the pip package's binary sits in the environment's bin folder, which is
    not on PATH when ``.venv/bin/svformer-deploy`` runs without an activated environment."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path


@functools.cache
def register_fakes() -> None:
    """Register the fake implementations of the library's operators (once per process, after it is loaded):
    what ``torch.compile`` (FakeTensor tracing) and meta tensors use instead of running the kernel. Every output is
    a new contiguous tensor: the spikes / dL/dX like ``x``, dL/dk one float64 value, bits ``numel / 8`` bytes.
    ``torch.library.register_fake`` is torch >= 2.4 (the Lava side environment runs torch 2.3): without it the
    kernels run as before, only ``torch.compile`` cannot trace them."""
    fake = getattr(torch.library, "register_fake", None)
    if fake is None:
        return
    fake("svformer_deploy::plif_forward")(lambda x, k, v_threshold: x.new_empty(x.shape))
    fake("svformer_deploy::plif_forward_bits")(
        lambda x, k, v_threshold: (x.new_empty(x.shape), x.new_empty((x.numel() // 8,), dtype=torch.uint8)))
    fake("svformer_deploy::plif_backward")(
        lambda x, grad_s, k, v_threshold, alpha: (x.new_empty(x.shape), x.new_empty((), dtype=torch.float64)))
    fake("svformer_deploy::pack_spikes")(lambda x: x.new_empty(((x.numel() + 7) // 8,), dtype=torch.uint8))
    fake("svformer_deploy::unpack_spikes")(lambda bits, n, dtype, offset: bits.new_empty((offset + n,), dtype=dtype))


def fused_plif_available() -> bool:
    """Whether the fused PLIF kernels serve this process (:func:`_load`), their fake implementations registered."""
    if not _load():
        return False
    register_fakes()
    return True


@functools.cache
def _load() -> bool:
    """Build (first call on this machine) and load the fused PLIF kernels; False (with one warning) if impossible.

    A finished build leaves the stamp file ``built`` beside the library; any later process loads the library
    directly (about 0.2 s). Builds are serialised by an OS lock (``filelock``, released by the kernel if the
    builder dies, so an interrupted build never blocks later ones) and compile a copy of the source inside the
    build folder, so every checkout or installation of the same source shares one build instead of rebuilding
    for its own path.
    """
    if os.environ.get("SVFORMER_NO_EXT", "") not in ("", "0"):
        return False
    if hasattr(torch.ops.svformer_deploy, "plif_forward"):
        return True
    build = extension_dir()
    library, stamp = build / "svformer_deploy_plif.so", build / "built"
    if library.exists() and stamp.exists():  # built before, completely
        torch.ops.load_library(str(library))
        return True
    try:
        # torch logs a CUDA_HOME notice on import on machines without CUDA; not the user's concern here
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from filelock import FileLock
        from torch.utils import cpp_extension

        _put_ninja_on_path()
        build.mkdir(parents=True, exist_ok=True)
        with FileLock(str(build / "build.lock")):
            if not (library.exists() and stamp.exists()):  # nobody finished it while we waited
                source = build / SOURCE.name
                if not source.exists() or source.read_bytes() != SOURCE.read_bytes():
                    source.write_bytes(SOURCE.read_bytes())
                stamp.unlink(missing_ok=True)
                cpp_extension.load(name="svformer_deploy_plif", sources=[str(source)], extra_cflags=CFLAGS,
                                   extra_ldflags=["-fopenmp"], build_directory=str(build), is_python_module=False,
                                   verbose=False)
                stamp.write_text(f"{SOURCE.name} {' '.join(CFLAGS)}\n", encoding="utf-8")
                return True
        torch.ops.load_library(str(library))
    except Exception as err:  # no compiler / ninja / headers: the pure-torch neurons still work
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"svformer-deploy: the fused PLIF kernel could not be built ({first_line}); using the slower "
                      "pure-torch PLIF. Install a C++ compiler and ninja (pip install ninja) to get it.",
                      RuntimeWarning, stacklevel=2)
        return False
    return True
