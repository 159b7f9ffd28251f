"""Fused CPU kernels (studio.kernels): each backend function with the kernels equals its MindSpore op chain and
a float64 numpy reference, on awkward shapes and strided views; the build caches one library and fails soft."""

import os
import re
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from studio import backend, kernels
from tests.util import cache_environment

EPS = 1e-6


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory):
    """The kernels built from scratch into an empty cache; this module's tests run the ops of that build.
    Returns the cache's kernels folder."""
    if not backend.on_cpu():
        pytest.skip("the fused kernels run on the CPU only")
    if kernels.compiler() is None:
        pytest.skip("no C++ compiler: the kernels can't be built")
    cache = tmp_path_factory.mktemp("studio-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_CACHE", str(cache))
        mp.delenv("STUDIO_CPU_KERNELS", raising=False)
        mp.setattr(kernels, "_LIBRARY", False)
        mp.setattr(kernels, "_OPS", {})
        assert kernels.library() is not None
        yield cache / "kernels"


def fused_and_chain(monkeypatch, kernel: str, fn):
    """fn() run once through the fused kernel `kernel` (checked to have run) and once through the op chain."""
    real_get, built = kernels.get, []

    def spy(name):
        op = real_get(name)
        built.append((name, op is not None))
        return op

    with monkeypatch.context() as m:
        m.setattr(kernels, "get", spy)
        fused = fn()
        assert (kernel, True) in built, f"{kernel} did not run: {built}"
        m.setattr(kernels, "get", lambda name: None)
        chain = fn()
    return fused, chain


def assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def tensor(a: np.ndarray) -> ms.Tensor:
    return ms.Tensor(np.ascontiguousarray(a, dtype=np.float32))


def as64(t: ms.Tensor) -> np.ndarray:
    return t.asnumpy().astype(np.float64)


def strided(rng, shape: tuple[int, ...], view: str, loc=0.0, spread=1.0) -> ms.Tensor:
    """A random fp32 tensor of `shape`: contiguous ("none"), a slice of axis 1 ("slice") or a transposed view of
    the last two axes ("transpose")."""
    if view == "none":
        return tensor(loc + spread * rng.standard_normal(shape))
    if view == "slice":
        wider = (shape[0], shape[1] + 7, *shape[2:])
        t = tensor(loc + spread * rng.standard_normal(wider))[:, 3:3 + shape[1]]
    else:
        swapped = (*shape[:-2], shape[-1], shape[-2])
        t = tensor(loc + spread * rng.standard_normal(swapped)).swapaxes(-1, -2)
    assert tuple(t.shape) == shape and not t.is_contiguous()
    return t


def per_sample_rows(rng, b: int, d: int) -> list[ms.Tensor]:
    """Six (B, 1, D) views of one (B, 6, D) tensor, as the transformer block splits its modulation."""
    mods = tensor(0.5 * rng.standard_normal((b, 6, d)))
    return list(ms.ops.split(mods, 1, axis=1))


# -- float64 references ------------------------------------------------------------------------------------------

def gelu_tanh_ref(x, bias):
    v = x if bias is None else x + bias
    return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3)))


def modulated_layer_norm_ref(x, shift, scale, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * (1.0 + scale) + shift


def normalize_channels_ref(x, mean, var, groups, weight, bias, eps, silu):
    b, c = x.shape[:2]
    per = c // groups
    mean_c = np.repeat(mean, per, axis=1)[:, :, None, None]  # (B, C, 1, 1)
    var_c = np.repeat(var, per, axis=1)[:, :, None, None]
    y = (x - mean_c) / np.sqrt(var_c + eps) * weight[None, :, None, None] + bias[None, :, None, None]
    return y / (1.0 + np.exp(-y)) if silu else y


def group_moments_ref(x, groups):
    rows = x.reshape(x.shape[0], groups, -1)  # (B, G, n)
    return rows.mean(axis=-1), rows.var(axis=-1)


# -- each backend function: kernel == op chain == reference ------------------------------------------------------

@pytest.mark.parametrize("shape,view,with_bias", [
    ((3, 5, 37), "none", True),
    ((1, 7, 19), "none", False),
    ((3, 14, 37), "slice", True),
    ((1, 9, 21), "transpose", False),
    ((3, 11, 23), "transpose", True),
])
def test_gelu_tanh(fresh_build, monkeypatch, shape, view, with_bias):
    rng = np.random.default_rng(1)
    x = strided(rng, shape, view, spread=2.0)
    bias = tensor(rng.standard_normal(shape[-1])) if with_bias else None
    fused, chain = fused_and_chain(monkeypatch, "BiasGeluTanh", lambda: backend.gelu_tanh(x, bias).asnumpy())
    expected = gelu_tanh_ref(as64(x), None if bias is None else as64(bias))
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


@pytest.mark.parametrize("with_bias", [True, False])
def test_gelu_tanh_large_inputs_stay_finite(fresh_build, monkeypatch, with_bias):
    """|x| up to 100, where exp(-x (a + b x^2)) overflows float32 unless its argument is clamped."""
    rng = np.random.default_rng(2)
    x = tensor(np.linspace(-100.0, 100.0, 3 * 7 * 19).reshape(3, 7, 19))
    bias = tensor(rng.standard_normal(19)) if with_bias else None
    fused, chain = fused_and_chain(monkeypatch, "BiasGeluTanh", lambda: backend.gelu_tanh(x, bias).asnumpy())
    v = as64(x) if bias is None else as64(x) + as64(bias)  # (3, 7, 19)
    expected = gelu_tanh_ref(v, None)
    assert_close(fused, expected)  # assert_close checks every value is finite
    assert_close(chain, expected)
    assert np.abs(fused[v < -20]).max() < 1e-30  # the far negative tail is 0, not -x or NaN
    np.testing.assert_allclose(fused[v > 20], v[v > 20], rtol=1e-6)  # the positive one is x + bias


@pytest.mark.parametrize("b,n,d,view", [(1, 5, 37, "none"), (3, 14, 37, "slice"), (3, 9, 19, "transpose")])
def test_gated_add(fresh_build, monkeypatch, b, n, d, view):
    rng = np.random.default_rng(3)
    x = strided(rng, (b, n, d), view)
    y = strided(rng, (b, n, d), "transpose" if view == "slice" else "none")
    gate = per_sample_rows(rng, b, d)[2]
    fused, chain = fused_and_chain(monkeypatch, "GatedAdd", lambda: backend.gated_add(x, gate, y).asnumpy())
    expected = as64(x) + as64(gate) * as64(y)
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


@pytest.mark.parametrize("b,n,d,view", [(1, 5, 37, "none"), (3, 14, 37, "slice"), (2, 9, 19, "transpose")])
def test_rms_norm(fresh_build, monkeypatch, b, n, d, view):
    rng = np.random.default_rng(7)
    x = strided(rng, (b, n, d), view, loc=1.0, spread=3.0)
    weight = tensor(rng.standard_normal(d))
    fused, chain = fused_and_chain(monkeypatch, "RmsNorm", lambda: backend.rms_norm(x, weight, EPS).asnumpy())
    x64 = as64(x)
    expected = as64(weight) * x64 / np.sqrt((x64 ** 2).mean(axis=-1, keepdims=True) + EPS)
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


@pytest.mark.parametrize("b,n,d,view", [(1, 5, 37, "none"), (3, 14, 37, "slice"), (3, 9, 19, "transpose")])
def test_modulated_layer_norm(fresh_build, monkeypatch, b, n, d, view):
    rng = np.random.default_rng(4)
    x = strided(rng, (b, n, d), view, loc=3.0, spread=2.0)  # an offset mean: the variance must be centred
    shift, scale = per_sample_rows(rng, b, d)[:2]
    fused, chain = fused_and_chain(monkeypatch, "ModulatedLayerNorm",
                                   lambda: backend.modulated_layer_norm(x, shift, scale, EPS).asnumpy())
    expected = modulated_layer_norm_ref(as64(x), as64(shift), as64(scale), EPS)
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


def test_modulated_layer_norm_of_large_fp16_activations_stays_finite():
    """fp16 rows whose squares overflow fp16 (|x| > 256) normalise as in fp32, to fp16 rounding."""
    rng = np.random.default_rng(5)
    x = 400 * rng.standard_normal((2, 6, 64))
    shift, scale = (0.5 * rng.standard_normal((2, 1, 64)) for _ in range(2))
    y = backend.modulated_layer_norm(*(ms.Tensor(a, ms.float16) for a in (x, shift, scale)), EPS)
    assert y.dtype == ms.float16
    expected = modulated_layer_norm_ref(*(a.astype(np.float16).astype(np.float64) for a in (x, shift, scale)), EPS)
    assert_close(y.asnumpy().astype(np.float64), expected, rtol=2e-3, atol=2e-3)


GROUP_CASES = [  # (B, C, H, W), groups, view
    ((1, 6, 5, 7), 1, "none"),
    ((1, 6, 5, 7), 3, "none"),
    ((3, 12, 7, 7), 4, "slice"),
    ((3, 10, 9, 5), 5, "transpose"),
    ((3, 6, 3, 3), 6, "none"),  # a group per channel
]


def channel_shift(rng, c: int, with_shift: bool) -> ms.Tensor | None:
    """A per-channel shift (a conv bias not yet added), or None."""
    return tensor(2.0 * rng.standard_normal(c)) if with_shift else None


def shifted64(x: ms.Tensor, shift: ms.Tensor | None) -> np.ndarray:
    return as64(x) if shift is None else as64(x) + as64(shift)[None, :, None, None]


@pytest.mark.parametrize("silu,with_shift", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("shape,groups,view", GROUP_CASES)
def test_group_norm(fresh_build, monkeypatch, shape, groups, view, silu, with_shift):
    rng = np.random.default_rng(5)
    x = strided(rng, shape, view, loc=1.5, spread=2.0)
    weight, bias = tensor(1.0 + 0.3 * rng.standard_normal(shape[1])), tensor(0.3 * rng.standard_normal(shape[1]))
    shift = channel_shift(rng, shape[1], with_shift)
    fused, chain = fused_and_chain(monkeypatch, "GroupNormApply",
                                   lambda: backend.group_norm(x, groups, weight, bias, EPS, silu, shift).asnumpy())
    mean, var = group_moments_ref(shifted64(x, shift), groups)
    expected = normalize_channels_ref(shifted64(x, shift), mean, var, groups, as64(weight), as64(bias), EPS, silu)
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


@pytest.mark.parametrize("with_shift", [False, True])
@pytest.mark.parametrize("shape,groups,view", GROUP_CASES)
def test_group_sums(fresh_build, monkeypatch, shape, groups, view, with_shift):
    """The kernel's sums are float64 and equal numpy's float64 sums; the op chain's are fp32."""
    rng = np.random.default_rng(6)
    x = strided(rng, shape, view, loc=1.5, spread=2.0)
    shift = channel_shift(rng, shape[1], with_shift)

    def sums():
        total, squares = backend.group_sums(x, groups, shift)
        assert total.dtype == squares.dtype
        return total.dtype, np.stack([total.asnumpy(), squares.asnumpy()])  # (2, B, G)

    (fused_dtype, fused), (chain_dtype, chain) = fused_and_chain(monkeypatch, "GroupSums", sums)
    rows = shifted64(x, shift).reshape(shape[0], groups, -1)  # (B, G, n)
    expected = np.stack([rows.sum(axis=-1), (rows * rows).sum(axis=-1)])
    magnitude = np.stack([np.abs(rows).sum(axis=-1), (rows * rows).sum(axis=-1)])  # a signed sum may be near 0
    assert (fused_dtype, chain_dtype) == (ms.float64, ms.float32)
    assert fused.dtype == np.float64 and fused.shape == expected.shape == chain.shape
    assert np.all(np.abs(fused - expected) <= 1e-12 * magnitude)
    assert np.all(np.abs(chain - expected) <= 1e-5 * magnitude)


@pytest.mark.parametrize("silu,with_shift", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("shape,groups,view", GROUP_CASES)
def test_normalize_channels(fresh_build, monkeypatch, shape, groups, view, silu, with_shift):
    """Given (B, groups) statistics, as tiled VAE decoding passes them."""
    rng = np.random.default_rng(7)
    x = strided(rng, shape, view, loc=0.5, spread=2.0)
    mean, var = tensor(rng.standard_normal((shape[0], groups))), tensor(rng.uniform(0.5, 4.0, (shape[0], groups)))
    weight, bias = tensor(1.0 + 0.3 * rng.standard_normal(shape[1])), tensor(0.3 * rng.standard_normal(shape[1]))
    shift = channel_shift(rng, shape[1], with_shift)
    fused, chain = fused_and_chain(monkeypatch, "GroupNormApply", lambda: backend.normalize_channels(
        x, mean, var, groups, weight, bias, EPS, silu, shift).asnumpy())
    expected = normalize_channels_ref(shifted64(x, shift), as64(mean), as64(var), groups, as64(weight), as64(bias),
                                      EPS, silu)
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


@pytest.mark.parametrize("shape,view", [((1, 6, 5, 7), "none"), ((3, 12, 7, 7), "slice"), ((2, 10, 9, 5), "transpose")])
def test_residual_add(fresh_build, monkeypatch, shape, view):
    rng = np.random.default_rng(8)
    x, y = strided(rng, shape, view), strided(rng, shape, "none")
    bias = tensor(rng.standard_normal(shape[1]))
    fused, chain = fused_and_chain(monkeypatch, "AddChannelBias", lambda: backend.residual_add(x, y, bias).asnumpy())
    expected = as64(x) + shifted64(y, bias)
    assert_close(fused, expected)
    assert_close(chain, expected)
    assert_close(fused, chain)


# -- the build ---------------------------------------------------------------------------------------------------

def test_fresh_build_leaves_one_library_and_no_temporaries(fresh_build, monkeypatch):
    files = list(fresh_build.iterdir())
    assert len(files) == 1 and re.fullmatch(r"cpu_kernels-[0-9a-f]{16}\.so", files[0].name), files
    assert files[0].is_file()
    # a new process (module state reset) finds the library in the cache and compiles nothing
    monkeypatch.setattr(kernels, "_LIBRARY", False)
    monkeypatch.setattr(kernels, "_OPS", {})
    mtime = files[0].stat().st_mtime_ns
    assert kernels.library() == files[0]
    assert list(fresh_build.iterdir()) == files and files[0].stat().st_mtime_ns == mtime


def fresh_state(monkeypatch, tmp_path, cxx: str):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", cxx)
    monkeypatch.delenv("STUDIO_CPU_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_LIBRARY", False)
    monkeypatch.setattr(kernels, "_OPS", {})


def test_failing_compiler_warns_once_and_backend_falls_back(monkeypatch, tmp_path):
    fresh_state(monkeypatch, tmp_path, "false")
    rng = np.random.default_rng(8)
    x, y, gate = tensor(rng.standard_normal((3, 5, 37))), tensor(rng.standard_normal((3, 5, 37))), \
        tensor(rng.standard_normal((3, 1, 37)))
    with pytest.warns(RuntimeWarning, match="fused CPU kernels unavailable") as record:
        assert kernels.library() is None
        assert kernels.library() is None
        assert kernels.get("GatedAdd") is None and kernels.get("GroupSums") is None
        out = backend.gated_add(x, gate, y).asnumpy()
        gelu = backend.gelu_tanh(x).asnumpy()
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert_close(out, as64(x) + as64(gate) * as64(y))
    assert_close(gelu, gelu_tanh_ref(as64(x), None))


def test_no_compiler_warns_once(monkeypatch, tmp_path):
    fresh_state(monkeypatch, tmp_path, "")
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(kernels.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as record:
        assert kernels.get("GatedAdd") is None and kernels.library() is None
    assert len(record) == 1 and not (tmp_path / "cache").exists()


def test_compile_error_warns_with_its_message_and_leaves_no_files(monkeypatch, tmp_path):
    """A compiler that runs but fails to compile: the warning quotes its first line of errors, and the cache
    folder is left empty (the temporary build folder is removed)."""
    cxx = tmp_path / "broken-c++"
    cxx.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "broken-c++ 1.0"; exit 0; }\n'
                   'echo "cpu_kernels.cc:1: error: something went wrong" >&2\nexit 1\n')
    cxx.chmod(0o755)
    fresh_state(monkeypatch, tmp_path, str(cxx))
    with pytest.warns(RuntimeWarning, match="cpu_kernels.cc:1: error: something went wrong"):
        assert kernels.get("BiasGeluTanh") is None
    assert list((tmp_path / "cache" / "kernels").iterdir()) == []


def writing_compiler(tmp_path, seconds: float = 0) -> Path:
    """A compiler that writes 'built' as its output after `seconds` (and appends its arguments to
    `tmp_path`/runs)."""
    cxx = tmp_path / "writing-c++"
    cxx.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "writing-c++ 1.0"; exit 0; }\n'
                   f'echo "$@" >> {tmp_path / "runs"}\nsleep {seconds}\nfor last; do :; done\n'
                   'echo built > "$last"\n')
    cxx.chmod(0o755)
    return cxx


def loading_anything(monkeypatch):
    """The library check passing whatever was built (a writing compiler's 'built')."""
    monkeypatch.setattr(kernels.ctypes, "CDLL", lambda path: None)


@pytest.mark.parametrize("variables, expected", [
    ({"STUDIO_CACHE": "~/sc"}, "sc/kernels"), ({"STUDIO_CACHE": "$CACHES/sc"}, "caches/sc/kernels"),
    ({"XDG_CACHE_HOME": "~/xdg"}, "xdg/studio/kernels"), ({}, ".cache/studio/kernels"),
])
def test_the_library_is_built_in_the_cache_with_tilde_and_variables_expanded(monkeypatch, tmp_path, variables,
                                                                              expected):
    """$STUDIO_CACHE/kernels, else $XDG_CACHE_HOME/studio/kernels, else ~/.cache/studio/kernels, ~ and $VARIABLES
    expanded ('~/sc' was a folder named '~' in the working folder). A compiler that writes its output."""
    fresh_state(monkeypatch, tmp_path, str(writing_compiler(tmp_path)))
    loading_anything(monkeypatch)
    work = cache_environment(monkeypatch, tmp_path, variables)
    library = kernels.library()
    assert library.parent == tmp_path / expected and library.read_text() == "built\n"
    assert list(work.iterdir()) == []


def test_a_build_failing_for_want_of_disk_says_so(monkeypatch, tmp_path):
    """A full or unwritable cache folder is named as the cause (the compiler's last line said 'ld returned 1 exit
    status', or that the object file it could not write was missing); else the compiler's first line of errors."""
    cxx = tmp_path / "failing-c++"
    cxx.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "failing-c++ 1.0"; exit 0; }\n'
                   'printf "In file included from cpu_kernels.cc:1:\\ncpu_kernels.cc:7: error: the first\\n'
                   'cpu_kernels.cc:9: error: the second\\ncollect2: error: ld returned 1 exit status\\n" >&2\nexit 1\n')
    cxx.chmod(0o755)
    kernels_dir = tmp_path / "cache" / "kernels"
    fresh_state(monkeypatch, tmp_path, str(cxx))
    with pytest.warns(RuntimeWarning, match=r"unavailable \(cpu_kernels\.cc:7: error: the first\); using MindSpore"):
        assert kernels.library() is None
    fresh_state(monkeypatch, tmp_path, str(cxx))
    disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=40 * 1024))
    with pytest.warns(RuntimeWarning, match=rf"unavailable \(their cache folder {re.escape(str(kernels_dir))} is "
                                            r"full: 40 KiB free; set STUDIO_CACHE to another\); using MindSpore ops$"):
        assert kernels.library() is None
    fresh_state(monkeypatch, tmp_path, str(cxx))
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "ro" / "cache"))
    (tmp_path / "ro").mkdir()
    access = os.access  # as a read-only mount answers (tests run as root, where permissions stop no write)
    monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and
                        not Path(path).is_relative_to(tmp_path / "ro"))
    ro = re.escape(str(tmp_path / "ro" / "cache" / "kernels"))
    with pytest.warns(RuntimeWarning, match=rf"unavailable \(their cache folder {ro} is not writable; set STUDIO_CACHE "
                                            r"to another\); using MindSpore ops$"):
        assert kernels.library() is None


def test_a_library_that_does_not_load_warns_once_and_backend_falls_back(monkeypatch, tmp_path):
    """A cached library the loader refuses (here not a library at all) is an unavailable one, said once per
    process with the loader's reason, and found again by the next process, which compiles nothing; the ops
    fall back to MindSpore's (a Custom op of it failed every run)."""
    fresh_state(monkeypatch, tmp_path, str(writing_compiler(tmp_path)))
    rng = np.random.default_rng(9)
    x, y, gate = tensor(rng.standard_normal((2, 3, 11))), tensor(rng.standard_normal((2, 3, 11))), \
        tensor(rng.standard_normal((2, 1, 11)))
    for process in range(2):
        fresh_state(monkeypatch, tmp_path, str(tmp_path / "writing-c++"))
        with pytest.warns(RuntimeWarning) as record:
            assert kernels.library() is None and kernels.library() is None
            assert kernels.get("GatedAdd") is None
            out = backend.gated_add(x, gate, y).asnumpy()
        [target] = (tmp_path / "cache" / "kernels").iterdir()
        assert [str(w.message) for w in record] == [
            f"studio: fused CPU kernels unavailable (cannot load {target}: file too short; remove it to build it "
            f"again); using MindSpore ops"]
        assert re.fullmatch(r"cpu_kernels-[0-9a-f]{16}\.so", target.name) and target.read_text() == "built\n"
        assert len((tmp_path / "runs").read_text().splitlines()) == 2  # compiled and linked once, by the first
        assert_close(out, as64(x) + as64(gate) * as64(y))


def test_a_library_in_a_noexec_folder_is_said_to_be_there(fresh_build, monkeypatch, tmp_path):
    """The library built, copied into a tmpfs mounted noexec (where the audit found every run failing with a
    MindSpore traceback): the warning names the mount as the cause. Skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,noexec", "tmpfs", str(mnt)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        [library] = fresh_build.iterdir()
        (mnt / "kernels").mkdir()
        shutil.copy(library, mnt / "kernels")
        fresh_state(monkeypatch, tmp_path, "false")  # a compiler run would fail: none is
        monkeypatch.delenv("CXX")
        monkeypatch.setenv("STUDIO_CACHE", str(mnt))
        target = mnt / "kernels" / library.name
        with pytest.warns(RuntimeWarning) as record:
            assert kernels.library() is None and kernels.get("RmsNorm") is None
        assert [str(w.message) for w in record] == [
            f"studio: fused CPU kernels unavailable (cannot load {target}: its folder is mounted noexec; set "
            f"STUDIO_CACHE to another); using MindSpore ops"]
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # the failed dlopen left a mapping of the file


def test_a_killed_builds_folder_is_removed_by_the_next_build(monkeypatch, tmp_path):
    """A build works in a folder named after its process (as export's temporary files are): one a killed build
    left (its process gone, or its pid this process's now) is removed by the next build; one a running build is
    working in is left alone."""
    fresh_state(monkeypatch, tmp_path, str(writing_compiler(tmp_path)))
    loading_anything(monkeypatch)
    target = kernels.library()
    target.unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {pid: target.with_name(f".{target.name}.{pid:06x}00.part")
                   for pid in (int(dead.stdout), os.getpid(), running.pid)}
        for folder in folders.values():
            folder.mkdir()
            (folder / "k.o").write_bytes(b"half an object file")
        fresh_state(monkeypatch, tmp_path, str(tmp_path / "writing-c++"))
        assert kernels.library() == target and target.read_text() == "built\n"
        assert sorted(target.parent.iterdir()) == [folders[running.pid], target]
        assert (folders[running.pid] / "k.o").read_bytes() == b"half an object file"
    finally:
        running.kill()
        running.wait()


def test_threads_asking_at_once_share_one_build(monkeypatch, tmp_path):
    """Two threads asking for the library while it is being built (a slow compiler): one builds it, the other
    waits and gets it. Both built in one folder, the second removing the first's as a killed build's: the first's
    compiler found its folder gone, and warned."""
    fresh_state(monkeypatch, tmp_path, str(writing_compiler(tmp_path, seconds=0.5)))
    loading_anything(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ThreadPoolExecutor(2) as pool:
            libraries = [f.result(30) for f in [pool.submit(kernels.library) for _ in range(2)]]
    [target] = (tmp_path / "cache" / "kernels").iterdir()
    assert libraries == [target, target] and target.read_text() == "built\n"
    assert len((tmp_path / "runs").read_text().splitlines()) == 2  # compiled and linked once


def test_kernels_off_by_environment(monkeypatch, tmp_path):
    """STUDIO_CPU_KERNELS=0: no op, no build attempted (a failing compiler would warn), no warning."""
    fresh_state(monkeypatch, tmp_path, "false")
    monkeypatch.setenv("STUDIO_CPU_KERNELS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.get("GatedAdd") is None
        assert kernels.library() is None
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("b,c,o,h,w,view", [(1, 3, 5, 7, 6, "none"), (2, 4, 4, 5, 9, "slice"), (1, 2, 3, 1, 1, "none")])
def test_upsample2x_conv3x3(fresh_build, monkeypatch, b, c, o, h, w, view):
    """The four-phase form at the input's resolution equals a 3x3 conv of the nearest-upsampled input."""
    rng = np.random.default_rng(9)
    x = strided(rng, (b, c, h, w), view)
    weight, bias = tensor(rng.standard_normal((o, c, 3, 3))), tensor(rng.standard_normal(o))
    fused, chain = fused_and_chain(monkeypatch, "InterleavePhases",
                                   lambda: backend.upsample2x_conv3x3(x, weight, bias).asnumpy())
    up = np.repeat(np.repeat(as64(x), 2, axis=2), 2, axis=3)  # (B, C, 2H, 2W)
    padded = np.pad(up, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w64 = as64(weight)
    expected = np.zeros((b, o, 2 * h, 2 * w)) + as64(bias)[None, :, None, None]
    for dy in range(3):
        for dx in range(3):
            expected += np.einsum("oi,bihw->bohw", w64[:, :, dy, dx], padded[:, :, dy:dy + 2 * h, dx:dx + 2 * w])
    assert_close(fused, expected, rtol=1e-4, atol=1e-4)
    assert_close(chain, expected, rtol=1e-4, atol=1e-4)
    assert_close(fused, chain)


@pytest.mark.parametrize("rows", [3, 9, 40, 128, 129])
def test_linear_with_few_rows_against_a_wide_weight(rows):
    """backend.linear takes (W xᵀ)ᵀ on the CPU for 9-128 rows against 4096-wide weights (a prompt's tokens in
    T5): the same product as x Wᵀ, either way."""
    rng = np.random.default_rng(rows)
    x, w, b = rng.standard_normal((1, rows, 4096)), rng.standard_normal((96, 4096)) / 64, rng.standard_normal(96)
    assert backend._few_rows(rows, tensor(w)) == (backend.on_cpu() and 8 < rows <= 128)
    y = backend.linear(tensor(x), tensor(w), tensor(b))
    assert_close(y.asnumpy(), x @ w.T + b, rtol=1e-4, atol=1e-4)
