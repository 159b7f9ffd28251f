"""Device-specific op choices, in one place.

The model files call these functions and never ask which device they run on. On the CPU, MindSpore's
kernels differ a lot in speed and a dozen `mint` ops have no kernel at all (see README, "Why MindSpore
2.8"), so a few functions pick a formulation per device; on GPU/Ascend the native op is used.
"""

import contextlib
import ctypes
import functools
import gc
import math
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import mint, ops

from studio.errors import InputError, one_line

_SETUP_DONE = False
_DEVICE: str | None = None  # the device target, read once: ms.get_context can't be called in a compiled graph
_NUMBER: int | None = None  # the device number setup() chose, if it chose one
_SETUP = threading.Lock()  # threads setting up at once (a service's first requests): one sets the context


DEVICES = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend", "npu": "Ascend"}
DEVICE_HELP = "CPU, GPU or Ascend, with ':N' for the device number (GPU:1)"


def parse_device(text: str) -> tuple[str, int | None]:
    """'gpu', 'GPU:1', 'Ascend', 'npu:0' -> (MindSpore's device target, device number or None)."""
    name, colon, number = str(text).strip().partition(":")
    target = DEVICES.get(name.strip().lower())
    if target is None or (colon and not number.strip().isdigit()):
        raise InputError(f"device '{text}' is not one of {DEVICE_HELP}")
    if target == "CPU" and colon:
        raise InputError(f"device '{text}': the CPU has no device number (write CPU)")
    return target, int(number) if colon else None


def setup(device: str | None = None) -> str:
    """Set the MindSpore context once per process: the device from `device` ('GPU:1', see `parse_device`),
    else $STUDIO_DEVICE, else MindSpore's default. A device this MindSpore can't use, or another device than
    the one already set, is an InputError (naming STUDIO_DEVICE when the device came from there).

    On the CPU, PyNative dispatch threads compete with the compute threads; launching blocking
    roughly doubles matmul throughput there (measured, README). While a kernel runs, the calling thread
    then waits in a sched_yield loop on a core the kernel's two threads need (~45% of a core, seen as
    system time): on the CPU the calling thread's scheduling priority is lowered (nice 19) once
    MindSpore's kernel threads exist (threads inherit the nice value of the thread that starts them), so
    the loop yields to them: measured 627-681 -> 522 ms per PixArt-XL block at 512^2.
    STUDIO_CPU_NICE=0 keeps the calling thread's priority (a raised nice value cannot be lowered again
    without privileges).
    """
    with _SETUP:
        return _setup(device)


def _setup(device: str | None) -> str:
    global _SETUP_DONE, _DEVICE, _NUMBER
    if _SETUP_DONE:  # $STUDIO_DEVICE only chose the first time: a --device given then wins over it
        wanted = parse_device(device) if device else None
        # a device set without a number runs on MindSpore's device_id (0 unless set)
        number = _NUMBER if _NUMBER is not None or device_target() == "CPU" else ms.get_context("device_id")
        if wanted is not None and (wanted[0] != device_target() or wanted[1] not in (None, number)):
            now = device_target() + (f":{number}" if number is not None else "")
            raise InputError(f"device '{device}': this process already runs on {now} (MindSpore's device is "
                             f"chosen once per process)")
        return device_target()
    cpu_nice()  # a bad value is found before the device is set
    from_env = None if device else os.environ.get("STUDIO_DEVICE")
    device = device or from_env
    try:
        wanted = parse_device(device) if device else None
        if wanted is not None:
            _set_device(*wanted)
    except InputError as e:
        if from_env:  # say where the device came from: the command line names none
            raise InputError(f"STUDIO_DEVICE={from_env}: {e}") from None
        raise
    if wanted is not None:
        _NUMBER = wanted[1]
    _DEVICE = None
    if device_target() == "CPU":
        ms.runtime.launch_blocking()
        _lower_waiting_thread_priority()
    else:  # Ascend's memory counters read 0 until the device has run something (MindSpore's hal docs)
        one = ops.ones((1,), ms.float32)
        (one + one).asnumpy()
    _SETUP_DONE = True
    return device_target()


def _set_device(target: str, number: int | None) -> None:
    """ms.set_device, with what MindSpore prints while it looks for a device's libraries held back when the
    device turns out unusable (then a one-line InputError says so)."""
    with _stderr_held() as said:
        usable = target == "CPU" or ms.hal.is_available(target)
        count = ms.hal.device_count(target) if usable and number is not None and target != "CPU" else None
    if not usable:
        raise InputError(f"device {target}: this MindSpore ({ms.__version__}) can't use it here (it needs "
                         f"MindSpore's {target} build and the device's drivers)")
    if count is not None and number >= count:
        raise InputError(f"device {target}:{number}: there are {count} {target} device(s), numbered from 0")
    sys.stderr.write(said[0])
    ms.set_device(target, number) if number is not None else ms.set_device(target)


@contextlib.contextmanager
def _stderr_held():
    """Runs the block with file descriptor 2 going to a temporary file (C++ libraries write there directly);
    yields a list whose one item becomes what was written, once the block is done."""
    said = [""]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            said[0] = f.read().decode(errors="replace")


def cpu_nice() -> int:
    """$STUDIO_CPU_NICE (default 19), the nice value the thread waiting on the CPU's kernels takes; InputError
    unless a whole number."""
    text = os.environ.get("STUDIO_CPU_NICE", "19")
    try:
        return int(text)
    except ValueError:
        raise InputError(f"STUDIO_CPU_NICE={one_line(text)}: expected a whole number (19, the default, lowers the "
                         f"waiting thread's priority most; 0 keeps it)") from None


def _lower_waiting_thread_priority() -> None:
    nice = cpu_nice()
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    one = ops.ones((1,), ms.float32)
    (one + one).asnumpy()  # the first kernel starts MindSpore's actor and kernel threads at our priority
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), min(nice, 19)))
    except OSError:  # not permitted (some containers): run at the priority we have
        pass


def give_back_memory(collect: bool = True) -> None:
    """Collect what only reference cycles hold (`collect`: gc, ~0.1-0.4 s), then hand the host memory freed so far
    back to the system (glibc's malloc_trim(0); elsewhere nothing). glibc
    keeps a freed block below its mmap threshold in its heap, resident, and the threshold rises to the largest
    mapped block freed so far, up to 32 MiB: below every weight tensor of PixArt-Sigma XL. A released model's
    weights then stayed resident while the next one loaded (a scratch 546 MiB model, loaded a second time:
    971 -> 1486 MiB). Called where a model is released and before a load."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc (macOS, musl has it as a no-op), or no CDLL(None)
        return None


def device_target() -> str:
    return _DEVICE if _DEVICE is not None else _read_device()


def _read_device() -> str:
    global _DEVICE
    _DEVICE = ms.get_context("device_target")
    return _DEVICE


def on_cpu() -> bool:
    return device_target() == "CPU"


_SQRT_2_OVER_PI_X2 = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715 * _SQRT_2_OVER_PI_X2
_BATCH_MATMULS = {(ta, tb): ops.BatchMatMul(transpose_a=ta, transpose_b=tb) for ta in (False, True) for tb in (False, True)}
_BATCH_MATMUL = _BATCH_MATMULS[False, False]
_BATCH_MATMUL_TB = _BATCH_MATMULS[False, True]


def _kernel(name: str, *tensors: ms.Tensor):
    """The fused CPU kernel `name` (studio.kernels) when on the CPU, every tensor is fp32 and the kernels
    built; else None and the caller runs its op chain."""
    if not on_cpu() or any(t.dtype != ms.float32 for t in tensors):
        return None
    from studio import kernels
    return kernels.get(name)


def _per_sample(v: ms.Tensor, x: ms.Tensor) -> bool:
    """v is exactly (B, 1, D) for x (B, N, D): the layout the adaLN kernels read (no broadcasting)."""
    return x.ndim == 3 and tuple(v.shape) == (x.shape[0], 1, x.shape[2])


def _cfg(*values: float) -> ms.Tensor:
    return ms.Tensor(values, ms.float32)


def gelu_tanh(x: ms.Tensor, bias: ms.Tensor | None = None) -> ms.Tensor:
    """GELU, tanh approximation, of x + bias (bias over the last axis, optional).

    On the CPU one fused pass (~4x faster than the op chain at (2048, 4608)); without the kernels as
    x * sigmoid(x * (a + b x^2)), a = 2 sqrt(2/pi), b = 0.044715 a: the same function (0.5 (1 + tanh(z)) =
    sigmoid(2z)), ~6x faster than ops.gelu(approximate="tanh"), whose CPU kernel is slow.
    """
    kernel = _kernel("BiasGeluTanh", x, *([] if bias is None else [bias]))
    if kernel is not None:
        return kernel(x, bias if bias is not None else ops.zeros((x.shape[-1],), x.dtype))
    if bias is not None:
        x = ops.bias_add(x.reshape(-1, x.shape[-1]), bias).reshape(x.shape)
    if on_cpu():
        return x * ops.sigmoid(x * (_SQRT_2_OVER_PI_X2 + _GELU_CUBIC * (x * x)))
    return ops.gelu(x, approximate="tanh")


def silu(x: ms.Tensor) -> ms.Tensor:
    return ops.silu(x)


_MATMUL = ops.MatMul()
_MATMUL_TB = ops.MatMul(transpose_b=True)


def linear(x: ms.Tensor, weight: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """y = x @ weight.T + bias with weight in the checkpoint's (out, in) layout.

    As a 2D MatMul(transpose_b) plus bias_add: at (2048 x 1152) @ (4608 x 1152)ᵀ that ran 129 ms (168
    GFLOP/s, torch 124 ms) where ops.dense on the 3D input took 218 ms (100 GFLOP/s). On the CPU a few
    rows against a wide weight (`_few_rows`: a prompt's tokens in T5) run as (W xᵀ)ᵀ instead, 1.5-2.8x
    faster there (benchmarks/backend_ops.py).
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if _few_rows(x2.shape[0], weight):
        y = ops.transpose(_MATMUL_TB(weight, x2), (1, 0))  # (out, rows) -> (rows, out)
    else:
        y = _MATMUL_TB(x2, weight)  # (rows, out)
    if bias is not None:
        y = ops.bias_add(y, bias)
    return y.reshape(*lead, weight.shape[0])


def _few_rows(rows: int, weight: ms.Tensor) -> bool:
    """Whether `rows` x (in) @ (out x in)ᵀ runs faster as W xᵀ on the CPU: MindSpore's kernel for the
    tokens-first product is slow for 16-128 rows against 4096-wide weights (40 rows, 10240 x 4096: 72 ms,
    W xᵀ 27 ms), equal at 8 rows and beyond ~150, and no faster for 1152-wide ones."""
    return on_cpu() and 8 < rows <= 128 and weight.shape[1] >= 4096


def linear_channels_first(x: ms.Tensor, weight: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """Tokens (B, N, in) -> channels-first (B, out, N): W @ x_bᵀ + bias for each sample, x read transposed
    in place: the layout attention heads want, with no transpose of the activation."""
    b = x.shape[0]
    if _tile_weight(weight, b, x.shape[1]):
        y = _BATCH_MATMUL_TB(_batched(weight, b), x)  # (B, out, N)
    else:
        y = ops.stack([_MATMUL_TB(weight, x[i]) for i in range(b)])  # (B, out, N)
    return y if bias is None else ops.bias_add(y, bias)


def linear_from_channels_first(x: ms.Tensor, weight: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """Channels-first (B, in, N) -> tokens (B, N, out): x_bᵀ @ Wᵀ + bias per sample, both read transposed."""
    b, _, n = x.shape
    if _tile_weight(weight, b, n):
        y = _BATCH_MATMULS[True, True](x, _batched(weight, b))  # (B, N, out)
    else:
        y = ops.stack([_MATMUL_TA_TB(x[i], weight) for i in range(b)])  # (B, N, out)
    if bias is None:
        return y
    out = y.shape[-1]
    return ops.bias_add(y.reshape(b * n, out), bias).reshape(b, n, out)


_MATMUL_TA_TB = ops.MatMul(transpose_a=True, transpose_b=True)


def _tile_weight(weight: ms.Tensor, b: int, n: int) -> bool:
    """Whether one batched product against the weight tiled over the batch beats a product per sample and a
    stack: it writes (B - 1) weight copies where the stack writes the B x N x out result again. The batched
    product ran 3-4 ms faster per (1152 x 1152) projection at N = 1024 (benchmarks/backend_ops.py); with
    4096-wide weights and N = 300 the copies cost more than the stack (T5 therefore projects tokens-first)."""
    return b == 1 or (b - 1) * weight.shape[1] < b * n


def _batched(weight: ms.Tensor, b: int) -> ms.Tensor:
    """(out, in) -> (B, out, in); BatchMatMul has no broadcasting on the CPU."""
    w = weight.reshape(1, *weight.shape)
    return w if b == 1 else ops.tile(w, (b, 1, 1))


def expand(t: ms.Tensor, shape: tuple[int, ...]) -> ms.Tensor:
    """`t` made ready for an elementwise op with a tensor of `shape` (same rank, each axis equal or 1).

    On the CPU, MindSpore's broadcasting elementwise kernels are ~15x slower than same-shape ones
    (x * g, (2, 1024, 1152) by (2, 1, 1152): 12 ms, against 0.7 ms for same shapes and 0.2 ms for the
    tile; benchmarks/backend_ops.py), so `t` is tiled to the full shape there. Elsewhere it broadcasts.
    """
    if not on_cpu() or tuple(t.shape) == tuple(shape):
        return t
    return ops.tile(t, tuple(s // n for s, n in zip(shape, t.shape)))


def crop(x: ms.Tensor, y0: int, x0: int, h: int, w: int) -> ms.Tensor:
    """x[:, :, y0:y0 + h, x0:x0 + w] of (N, C, H, W) as a contiguous tensor. Copied through numpy on the
    CPU, where MindSpore's strided slice took 175 ms for a 128 x 512^2 crop of a 514^2 map and numpy's copy
    ~31 ms (a scratch measurement)."""
    if not on_cpu():
        return x[:, :, y0:y0 + h, x0:x0 + w]
    return ms.from_numpy(np.ascontiguousarray(x.asnumpy()[:, :, y0:y0 + h, x0:x0 + w]))


def filled_on_host(shape: tuple[int, ...]) -> tuple[ms.Tensor, np.ndarray]:
    """A float32 tensor of `shape` and a writable numpy array whose values it takes: fill the array, then use
    the tensor. On the CPU the tensor is one of MindSpore's pool and the array a view of it (`asnumpy` shares
    there), so data read from the host (a tiled decode's crops) lands where the pool already keeps its
    high-water mark from earlier phases, not in numpy memory on top of it (a 256-channel crop of a 512 px
    tile is 270 MB). Elsewhere, and should `asnumpy` ever copy, the tensor shares a numpy array, which the
    device copies in when the tensor is used."""
    if on_cpu():
        tensor = mint.empty(shape, dtype=ms.float32)
        view = tensor.asnumpy()
        if not view.flags.owndata and view.flags.writeable:
            return tensor, view
    array = np.empty(shape, np.float32)
    return ms.from_numpy(array), array


def row_mean(x: ms.Tensor) -> ms.Tensor:
    """Mean over the last axis of (..., D), keeping it: (..., 1). On the CPU as a product with a 1/D column
    (reductions along the last axis ran ~5x slower than the matmul there)."""
    d = x.shape[-1]
    if not on_cpu():
        return x.mean(axis=-1, keep_dims=True)
    col = ops.full((d, 1), 1.0 / d, dtype=x.dtype)
    return _MATMUL(x.reshape(-1, d), col).reshape(*x.shape[:-1], 1)


def rms_norm(x: ms.Tensor, weight: ms.Tensor, eps: float) -> ms.Tensor:
    """weight * x / sqrt(mean(x^2) + eps) over the last axis (RMSNorm, Zhang & Sennrich 2019), the statistic
    in fp32; the result has weight's dtype. One fused pass on the CPU for fp32."""
    kernel = _kernel("RmsNorm", x, weight) if weight.shape == (x.shape[-1],) else None
    if kernel is not None:
        return kernel(x, weight, _cfg(eps))
    xf = x.astype(ms.float32)
    rstd = ops.rsqrt(row_mean(ops.square(xf)) + eps)  # (..., 1)
    y = (xf * expand(rstd, xf.shape)).astype(weight.dtype)
    return expand(weight.reshape((1,) * (x.ndim - 1) + (-1,)), y.shape) * y


def gated_add(x: ms.Tensor, gate: ms.Tensor, y: ms.Tensor) -> ms.Tensor:
    """x + gate * y with x, y (B, N, D) and a per-sample gate (B, 1, D): adaLN's gated residual."""
    kernel = _kernel("GatedAdd", x, gate, y) if _per_sample(gate, x) and x.shape == y.shape else None
    if kernel is not None:
        return kernel(x, gate, y)
    return x + expand(gate, y.shape) * y


def modulated_layer_norm(x: ms.Tensor, shift: ms.Tensor, scale: ms.Tensor, eps: float) -> ms.Tensor:
    """LayerNorm(x) * (1 + scale) + shift, LayerNorm without affine over the last axis of x (B, N, D), with
    per-sample shift and scale (B, 1, D): adaLN's modulation.

    On the CPU in same-shape ops: centred two-pass statistics, and the per-token 1/std times the
    per-channel (1 + scale) as one (B, N, 1) x (B, 1, D) product. 12 ms against 36 ms for LayerNorm then
    broadcast multiply-add at (2, 1024, 1152) (benchmarks/backend_ops.py).
    """
    ok = _per_sample(shift, x) and _per_sample(scale, x)
    kernel = _kernel("ModulatedLayerNorm", x, shift, scale) if ok else None
    if kernel is not None:
        return kernel(x, shift, scale, _cfg(eps))
    if not on_cpu():
        return layer_norm(x, None, None, eps) * (1 + scale) + shift
    if x.dtype != ms.float32:  # in fp32: squares of fp16 activations above 256 overflow
        y = modulated_layer_norm(x.astype(ms.float32), shift.astype(ms.float32), scale.astype(ms.float32), eps)
        return y.astype(x.dtype)
    centred = x - expand(row_mean(x), x.shape)
    rstd = ops.rsqrt(row_mean(centred * centred) + eps)  # (B, N, 1)
    return centred * _BATCH_MATMUL(rstd, 1 + scale) + expand(shift, x.shape)


def layer_norm(x: ms.Tensor, weight: ms.Tensor | None, bias: ms.Tensor | None, eps: float) -> ms.Tensor:
    """LayerNorm over the last axis; weight/bias None means no affine."""
    dim = x.shape[-1]
    if weight is None:
        weight = ops.ones((dim,), x.dtype)
    if bias is None:
        bias = ops.zeros((dim,), x.dtype)
    return ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)(x, weight, bias)[0]


def group_norm(x: ms.Tensor, groups: int, weight: ms.Tensor, bias: ms.Tensor, eps: float, silu: bool = False,
               shift: ms.Tensor | None = None) -> ms.Tensor:
    """GroupNorm of x + shift, (B, C, H, W) with biased variance, then SiLU if `silu`. `shift` (C,) is a
    per-channel bias not yet added to x (the previous conv's), or None.

    On the CPU with the fused kernels: sums in float64 in one pass, then shift, normalise, scale and SiLU in
    one more; else mint's kernel (2x nn.GroupNorm's speed on the CPU) and a SiLU op.
    """
    if _kernel("GroupNormApply", x, weight, bias) is not None:
        total, squares = group_sums(x, groups, shift)
        n = x.size // (x.shape[0] * groups)
        mean = total / n
        var = ops.maximum(squares / n - mean * mean, 0.0)
        return normalize_channels(x, mean.astype(ms.float32), var.astype(ms.float32), groups, weight, bias, eps,
                                  silu, shift)
    y = mint.nn.functional.group_norm(_shifted(x, shift), groups, weight, bias, eps)
    return ops.silu(y) if silu else y


def group_sums(x: ms.Tensor, groups: int, shift: ms.Tensor | None = None) -> tuple[ms.Tensor, ms.Tensor]:
    """Sum and sum of squares of each (sample, group) of x + shift, x (B, C, H, W), shift (C,) or None: two
    (B, groups) tensors, float64 from the CPU kernel, else fp32.

    Sums, not means, so that tiles can be added up. Without the kernel both are matrix products (a row
    times a ones column, a row times itself), which run 5x faster than reductions on the CPU and make no
    full-size temporary.
    """
    b, c = x.shape[:2]
    kernel = _kernel("GroupSums", x, *([] if shift is None else [shift]))
    if kernel is not None:
        sums = kernel(x.reshape(b, groups, c // groups, -1), _zeros_if_none(shift, c))  # (B, G, 2) float64
        return sums[..., 0], sums[..., 1]
    rows = _shifted(x, shift).reshape(b * groups, 1, -1)  # (B*G, 1, n)
    if rows.dtype != ms.float32:
        rows = rows.astype(ms.float32)
    ones = ops.ones((1, rows.shape[-1]), ms.float32)  # (1, n)
    total = ops.dense(rows.reshape(b * groups, -1), ones).reshape(b, groups)
    squares = _BATCH_MATMUL_TB(rows, rows).reshape(b, groups)
    return total, squares


def normalize_channels(x: ms.Tensor, mean: ms.Tensor, var: ms.Tensor, groups: int, weight: ms.Tensor,
                       bias: ms.Tensor, eps: float, silu: bool = False, shift: ms.Tensor | None = None) -> ms.Tensor:
    """(x + shift - mean) / sqrt(var + eps) * weight + bias with (B, groups) fp32 statistics, then SiLU if
    `silu`: one fused pass on the CPU, else one per-channel op (BatchNorm's kernel) and a SiLU op."""
    kernel = _kernel("GroupNormApply", x, mean, var, weight, bias, *([] if shift is None else [shift]))
    if kernel is not None:
        return kernel(x, mean, ops.rsqrt(var + eps), _zeros_if_none(shift, x.shape[1]), weight, bias,
                      _cfg(float(silu)))
    y = _normalize_channels(_shifted(x, shift), mean, var, groups, weight, bias, eps)
    return ops.silu(y) if silu else y


def residual_add(x: ms.Tensor, y: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """x + y + bias with x, y (B, C, H, W) and a per-channel bias (C,) not yet added to y (its conv's), or
    None: one pass on the CPU instead of a bias pass and an add pass."""
    kernel = _kernel("AddChannelBias", x, y, bias) if bias is not None and x.shape == y.shape else None
    if kernel is not None:
        return kernel(x, y, bias)
    return x + _shifted(y, bias)


def _shifted(x: ms.Tensor, shift: ms.Tensor | None) -> ms.Tensor:
    return x if shift is None else ops.bias_add(x, shift)


def _zeros_if_none(t: ms.Tensor | None, n: int) -> ms.Tensor:
    return t if t is not None else ops.zeros((n,), ms.float32)


def _normalize_channels(x, mean, var, groups, weight, bias, eps):
    b, c, h, w = x.shape
    per = c // groups
    mean_c = ops.tile(mean.reshape(b, groups, 1), (1, 1, per)).reshape(b * c)  # (B*C,)
    var_c = ops.tile(var.reshape(b, groups, 1), (1, 1, per)).reshape(b * c)
    scale = ops.tile(weight.astype(ms.float32), (b,))
    shift = ops.tile(bias.astype(ms.float32), (b,))
    y = _BATCH_NORM_EVAL(eps)(x.reshape(1, b * c, h, w).astype(ms.float32), scale, shift, mean_c, var_c)[0]
    return y.reshape(b, c, h, w).astype(x.dtype)


_BATCH_NORMS: dict[float, object] = {}


def _BATCH_NORM_EVAL(eps: float):
    if eps not in _BATCH_NORMS:
        _BATCH_NORMS[eps] = ops.BatchNorm(is_training=False, epsilon=eps)
    return _BATCH_NORMS[eps]


def softmax_fp32(scores: ms.Tensor) -> ms.Tensor:
    """Softmax over the last axis computed in fp32 (fp16/bf16 scores overflow); returns fp32."""
    return mint.softmax(scores if scores.dtype == ms.float32 else scores.astype(ms.float32), dim=-1)


def bmm(a: ms.Tensor, b: ms.Tensor, transpose_a: bool = False, transpose_b: bool = False) -> ms.Tensor:
    """Batched matmul a @ b over equal batch dims, each operand optionally read transposed in place
    (matmul of a transposed view was 4x slower on the CPU than the transpose flag)."""
    return _BATCH_MATMULS[transpose_a, transpose_b](a, b)


def upsample2x_conv3x3(x: ms.Tensor, weight: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """A 3x3 convolution (zero padding 1, weight (O, I, 3, 3)) of x upsampled 2x by nearest neighbour:
    (B, I, H, W) -> (B, O, 2H, 2W).

    Computed at the input's resolution: output pixel (2i + p, 2j + q) sees input rows i - 1, i (p = 0) or
    i, i + 1 (p = 1), so each of the four phases (p, q) is a 2x2 convolution of x with the 3x3 taps summed
    per input pixel. 16 multiply-adds per output instead of 36, and no 4x upsampled copy of x. On the CPU
    one fused pass interleaves the phases and adds the bias.
    """
    rows = (ops.stack([weight[:, :, 0], weight[:, :, 1] + weight[:, :, 2]], axis=2),  # p = 0: (O, I, 2, 3)
            ops.stack([weight[:, :, 0] + weight[:, :, 1], weight[:, :, 2]], axis=2))  # p = 1
    phases = []
    for p, wr in enumerate(rows):
        for q, k in enumerate((ops.stack([wr[..., 0], wr[..., 1] + wr[..., 2]], axis=3),  # q = 0: (O, I, 2, 2)
                               ops.stack([wr[..., 0] + wr[..., 1], wr[..., 2]], axis=3))):  # q = 1
            phases.append(_phase_conv(k.shape[0], p, q)(x, k))  # (B, O, H, W)
    bias = _zeros_if_none(bias, weight.shape[0])
    kernel = _kernel("InterleavePhases", *phases, bias)
    if kernel is not None:
        return kernel(*phases, bias)
    b, o, h, w = phases[0].shape
    y = ops.stack(phases).reshape(2, 2, b, o, h, w).transpose(2, 3, 4, 0, 5, 1)  # (B, O, H, p, W, q)
    return ops.bias_add(y.reshape(b, o, 2 * h, 2 * w), bias)


_PHASE_CONVS: dict[tuple[int, int, int], object] = {}


def _phase_conv(out_channels: int, p: int, q: int):
    """2x2 convolution padded (top, bottom, left, right) = (1, 0) or (0, 1) per axis for phase (p, q)."""
    key = (out_channels, p, q)
    if key not in _PHASE_CONVS:
        _PHASE_CONVS[key] = ops.Conv2D(out_channels, 2, mode=1, pad_mode="pad", pad=(1 - p, p, 1 - q, q))
    return _PHASE_CONVS[key]


def compute_dtype(dtype: ms.Type) -> ms.Type:
    """The dtype models run in: as asked, except bf16 on the CPU, which has no bf16 matmul kernel, where
    weights stored in bf16 are widened to fp32."""
    if dtype == ms.bfloat16 and on_cpu():
        return ms.float32
    return dtype


def widened(asked: ms.Type, stacklevel: int) -> ms.Type:
    """compute_dtype(asked), with a warning when that is not `asked` (said, not silently changed); stacklevel:
    warnings.warn's, counted from this function's caller."""
    dtype = compute_dtype(asked)
    if dtype != asked:
        asked_name, name = str(asked).lower(), str(dtype).lower()
        warnings.warn(f"studio: {asked_name} computes in {name} here: MindSpore has no {asked_name} matmul on the "
                      f"{device_target()} (the weights are widened as they load)", stacklevel=stacklevel + 1)
    return dtype


def free_memory() -> int:
    """Bytes free for tensors on the device in use: available host RAM on the CPU (no more than this process's
    memory cgroups allow, `cgroup_room`: a container's or a Slurm job's limit), or the device's total
    memory on GPU/Ascend less what MindSpore's tensors hold (its pool's idle blocks count as free: tensors
    reuse them), and no more than the device reports free plus those idle blocks, where it reports that
    (other processes' use; else pass a budget when sharing a device). Sets the context first
    ($STUDIO_DEVICE), so a plan made before loading reads the device the pipeline will run on."""
    setup()
    if on_cpu():
        import psutil
        return int(min(psutil.virtual_memory().available, cgroup_room()))
    properties = ms.hal.get_device_properties(ms.get_context("device_id"))
    allocated, reserved = ms.runtime.memory_allocated(), ms.runtime.memory_reserved()
    room = properties.total_memory - allocated
    reported = getattr(properties, "free_memory", None)  # the device's own count: MindSpore's pool is used there
    if reported:
        room = min(room, reported + reserved - allocated)
    return int(room)


def cgroup_room(proc: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float:
    """Bytes this process's memory cgroups still allow (a container's, a Kubernetes pod's, a Slurm job's; v2 and
    v1, at every level from its own up): the least of limit - working set, the working set being the usage
    less the inactive file cache the kernel reclaims first (as container runtimes count it; none when memory.stat
    can't be read: the limit still holds); inf when no level sets a limit or none can be read."""
    def reclaimable(stat: Path, key: str) -> int:
        try:
            rows = stat.read_text().splitlines()
            return next((int(row.split()[1]) for row in rows if row.split()[:1] == [key]), 0)
        except (OSError, ValueError, IndexError):  # unreadable, or a malformed row: nothing counted reclaimable
            return 0

    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return math.inf
    room = math.inf
    for line in lines:
        if line.count(":") < 2:  # a blank or malformed line: no hierarchy named
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy (beside v1 ones, it is mounted at unified/)
            base = Path(root) / "unified" if (Path(root) / "unified").is_dir() else Path(root)
            names = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, names = Path(root) / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                 "total_inactive_file")
        else:
            continue
        folder = base / path.lstrip("/")
        for level in [folder, *folder.parents[:len(folder.parents) - len(base.parents)]]:
            try:
                text = (level / names[0]).read_text().strip()
                limit = math.inf if text == "max" else int(text)
                usage = int((level / names[1]).read_text())
            except (OSError, ValueError):  # no memory controller at this level
                continue
            if limit < 2 ** 60:  # v1 writes 'no limit' as a huge number
                room = min(room, limit - usage + reclaimable(level / "memory.stat", names[2]))
    return max(room, 0)
