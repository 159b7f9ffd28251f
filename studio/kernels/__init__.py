"""Fused CPU kernels (cpu_kernels.cc), compiled on first use and run through MindSpore's "aot" Custom op.

`get(name)` returns a callable op, or None when the kernels are off (STUDIO_CPU_KERNELS=0), there is no C++
compiler, or the build fails: callers then use their MindSpore op chains (backend.py), which compute the
same functions. The library is built once per source, compiler and machine (-march=native) into
`paths.cache_root("kernels")` ($STUDIO_CACHE/kernels, else $XDG_CACHE_HOME/studio/kernels, else
~/.cache/studio/kernels), in a temporary folder named after the process (`export.temporary_folder`, removed by the
next build once that process is gone) and renamed, so concurrent processes never load a half-written file; in a
process, one thread builds it while the others wait for it. A library that does not load (a cache folder mounted
noexec) is an unavailable one too.

The object file is compiled with -ffast-math (vectorised exp) and linked without it: linking with it would
add crtfastmath.o, which turns on flush-to-zero for the whole process.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import mindspore as ms
from mindspore import ops

from studio.export import remove_temporaries, temporary_folder
from studio.paths import cache_root

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-std=c++17", "-pthread"]
LINK_FLAGS = ["-shared", "-pthread"]
# free disk below which a failed build is said to be the cache's being full: the build writes an object file and
# the library, ~80 KB each (x86-64, AVX2), into the cache folder
BUILD_ROOM = 1 << 20

# name -> (output shapes from input shapes, output dtypes from input dtypes)
_SAME = (lambda *shapes: shapes[0], lambda *types: types[0])
SIGNATURES = {
    "BiasGeluTanh": _SAME,
    "ModulatedLayerNorm": _SAME,
    "GatedAdd": _SAME,
    "RmsNorm": _SAME,
    "GroupSums": (lambda x, shift: [x[0], x[1], 2], lambda x, shift: ms.float64),
    "GroupNormApply": _SAME,
    "AddChannelBias": _SAME,
    "InterleavePhases": (lambda a, *_: [a[0], a[1], 2 * a[2], 2 * a[3]], lambda a, *_: a),
}

_LIBRARY: Path | None | bool = False  # False: not tried yet
# held while building: a second thread's build would remove the first one's folder (its process's, not a file
# `export` is writing) as a killed build's
_LIBRARY_LOCK = threading.Lock()
_OPS: dict[str, object] = {}


def enabled() -> bool:
    return os.environ.get("STUDIO_CPU_KERNELS", "1") != "0"


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def library() -> Path | None:
    """The built kernel library, building it if needed; None if unavailable."""
    global _LIBRARY
    with _LIBRARY_LOCK:
        if _LIBRARY is False:
            _LIBRARY = _build() if enabled() else None
        return _LIBRARY


def _build() -> Path | None:
    cxx = compiler()
    if cxx is None:
        warnings.warn("studio: fused CPU kernels unavailable (no C++ compiler: install g++ or set CXX); "
                      "using MindSpore ops", RuntimeWarning, stacklevel=3)
        return None
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
        key = hashlib.sha256("\0".join([SOURCE.read_text(), version, *COMPILE_FLAGS, *LINK_FLAGS, _cpu_flags()])
                             .encode()).hexdigest()[:16]
        target = cache_root("kernels") / f"cpu_kernels-{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # what a killed build leaves: the next one removes it
            remove_temporaries(target.parent, {target.name},
                               remove=lambda path: shutil.rmtree(path, ignore_errors=True))
            tmp = temporary_folder(target.parent, target.name)
            try:
                obj, lib = tmp / "k.o", tmp / "k.so"
                subprocess.run([cxx, *COMPILE_FLAGS, "-c", str(SOURCE), "-o", str(obj)], capture_output=True,
                               text=True, check=True)
                subprocess.run([cxx, *LINK_FLAGS, str(obj), "-o", str(lib)], capture_output=True, text=True,
                               check=True)
                os.replace(lib, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, subprocess.CalledProcessError) as e:
        warnings.warn(f"studio: fused CPU kernels unavailable ({_failure(e)}); using MindSpore ops", RuntimeWarning,
                      stacklevel=3)
        return None
    try:
        ctypes.CDLL(str(target))  # as the Custom ops will: failing there, it would fail every run
    except OSError as e:
        warnings.warn(f"studio: fused CPU kernels unavailable (cannot load {target}: {_load_failure(target, e)}); "
                      f"using MindSpore ops", RuntimeWarning, stacklevel=3)
        return None
    return target


def _failure(e: OSError | subprocess.CalledProcessError) -> str:
    """Why the build failed: the cache folder full or not writable when it is (a full disk makes the compiler say
    'ld returned 1 exit status', or that the object file it could not write is missing), else the compiler's
    first line of errors."""
    folder = cache_root("kernels")
    existing = next(p for p in (folder, *folder.parents) if p.is_dir())  # the folder may not have been made
    if not os.access(existing, os.W_OK):
        return f"their cache folder {folder} is not writable; set STUDIO_CACHE to another"
    free = shutil.disk_usage(existing).free
    if free < BUILD_ROOM:
        return f"their cache folder {folder} is full: {free // 1024} KiB free; set STUDIO_CACHE to another"
    lines = (getattr(e, "stderr", "") or "").strip().splitlines()
    return next((line for line in lines if "error" in line.lower()), lines[-1] if lines else str(e))


def _load_failure(target: Path, e: OSError) -> str:
    """Why the library did not load: its folder mounted noexec (dlopen says 'failed to map segment from shared
    object'), else the loader's message (a damaged file: 'invalid ELF header')."""
    statvfs = getattr(os, "statvfs", None)  # none on Windows
    if statvfs is not None and statvfs(target.parent).f_flag & getattr(os, "ST_NOEXEC", 0):
        return "its folder is mounted noexec; set STUDIO_CACHE to another"
    return f"{str(e).removeprefix(f'{target}: ')}; remove it to build it again"


def _cpu_flags() -> str:
    """The CPU's feature flags: -march=native code is only valid on a CPU that has them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return sys.platform


def get(name: str):
    """The Custom op running kernel `name`, or None (see module docstring)."""
    if name not in _OPS:
        lib = library()
        if lib is None:
            _OPS[name] = None
        else:
            shape_fn, dtype_fn = SIGNATURES[name]
            _OPS[name] = ops.Custom(f"{lib}:{name}", out_shape=shape_fn, out_dtype=dtype_fn, func_type="aot")
    return _OPS[name]
