"""Device-specific op choices, in one place.

The model files call these functions and never ask which device they run on. On the CPU, MindSpore's
kernels differ a lot in speed and a dozen `mint` ops have no kernel at all (see README, "Why MindSpore
2.8"), so a few functions pick a formulation per device; on GPU/Ascend the native op is used.
"""

import math
import os

import mindspore as ms
from mindspore import mint, ops

_SETUP_DONE = False
_DEVICE: str | None = None  # the device target, read once: ms.get_context can't be called in a compiled graph


def setup(device: str | None = None) -> str:
    """Set the MindSpore context once: device from `device`, $STUDIO_DEVICE, or MindSpore's default.

    On the CPU, PyNative dispatch threads compete with the compute threads; launching blocking
    roughly doubles matmul throughput there (measured, README).
    """
    global _SETUP_DONE, _DEVICE
    device = device or os.environ.get("STUDIO_DEVICE")
    if not _SETUP_DONE:
        if device:
            ms.set_device(device)
        _DEVICE = None
        if device_target() == "CPU":
            ms.runtime.launch_blocking()
        _SETUP_DONE = True
    return device_target()


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
_BATCH_MATMUL = ops.BatchMatMul()
_BATCH_MATMUL_TB = ops.BatchMatMul(transpose_b=True)


def gelu_tanh(x: ms.Tensor) -> ms.Tensor:
    """GELU, tanh approximation. On the CPU as x * sigmoid(x * (a + b x^2)), a = 2 sqrt(2/pi), b = 0.044715 a:
    the same function (0.5 (1 + tanh(z)) = sigmoid(2z)), measured ~6x faster than ops.gelu(approximate="tanh")
    at (2, 4096, 4608) and faster than torch's tanh GELU."""
    if on_cpu():
        return x * ops.sigmoid(x * (_SQRT_2_OVER_PI_X2 + _GELU_CUBIC * (x * x)))
    return ops.gelu(x, approximate="tanh")


def gelu(x: ms.Tensor) -> ms.Tensor:
    """Exact (erf) GELU."""
    return ops.gelu(x, approximate="none")


def silu(x: ms.Tensor) -> ms.Tensor:
    return ops.silu(x)


_MATMUL_TB = ops.MatMul(transpose_b=True)


def linear(x: ms.Tensor, weight: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """y = x @ weight.T + bias with weight in the checkpoint's (out, in) layout.

    As a 2D MatMul(transpose_b) plus bias_add: at (2048 x 1152) @ (4608 x 1152)ᵀ that ran 129 ms (168
    GFLOP/s, torch 124 ms) where ops.dense on the 3D input took 218 ms (100 GFLOP/s).
    """
    lead = x.shape[:-1]
    y = _MATMUL_TB(x.reshape(-1, x.shape[-1]), weight)  # (rows, out)
    if bias is not None:
        y = ops.bias_add(y, bias)
    return y.reshape(*lead, weight.shape[0])


def layer_norm(x: ms.Tensor, weight: ms.Tensor | None, bias: ms.Tensor | None, eps: float) -> ms.Tensor:
    """LayerNorm over the last axis; weight/bias None means no affine."""
    dim = x.shape[-1]
    if weight is None:
        weight = ops.ones((dim,), x.dtype)
    if bias is None:
        bias = ops.zeros((dim,), x.dtype)
    return ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)(x, weight, bias)[0]


def group_norm(x: ms.Tensor, groups: int, weight: ms.Tensor, bias: ms.Tensor, eps: float) -> ms.Tensor:
    """GroupNorm of (B, C, H, W) with biased variance (mint's kernel: 2x nn.GroupNorm's speed on the CPU)."""
    return mint.nn.functional.group_norm(x, groups, weight, bias, eps)


def group_sums(x: ms.Tensor, groups: int) -> tuple[ms.Tensor, ms.Tensor]:
    """Sum and sum of squares of each (sample, group) of (B, C, H, W): two (B, groups) fp32 tensors.

    Sums, not means, so that tiles can be added up. Both are matrix products (a row times a ones column,
    a row times itself), which run 5x faster than reductions on the CPU and make no full-size temporary.
    """
    b = x.shape[0]
    rows = x.reshape(b * groups, 1, -1)  # (B*G, 1, n)
    if rows.dtype != ms.float32:
        rows = rows.astype(ms.float32)
    ones = ops.ones((1, rows.shape[-1]), ms.float32)  # (1, n)
    total = ops.dense(rows.reshape(b * groups, -1), ones).reshape(b, groups)
    squares = _BATCH_MATMUL_TB(rows, rows).reshape(b, groups)
    return total, squares


def normalize_channels(x: ms.Tensor, mean: ms.Tensor, var: ms.Tensor, groups: int, weight: ms.Tensor,
                       bias: ms.Tensor, eps: float) -> ms.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias with (B, groups) statistics, as one per-channel op."""
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


def bmm(a: ms.Tensor, b: ms.Tensor, transpose_b: bool = False) -> ms.Tensor:
    """Batched matmul of (..., M, K) by (..., K, N), or by (..., N, K) with transpose_b (same batch dims).

    BatchMatMul(transpose_b=True) reads k in place; matmul of a transposed view was 4x slower on the CPU.
    """
    return (_BATCH_MATMUL_TB if transpose_b else _BATCH_MATMUL)(a, b)


def upsample_nearest2x(x: ms.Tensor) -> ms.Tensor:
    """Nearest-neighbour 2x upsampling of (B, C, H, W)."""
    return mint.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


def compute_dtype(dtype: ms.Type) -> ms.Type:
    """The dtype models run in: as asked, except bf16 on the CPU, which has no bf16 matmul kernel, where
    weights stored in bf16 are widened to fp32."""
    if dtype == ms.bfloat16 and on_cpu():
        return ms.float32
    return dtype


def free_memory() -> int:
    """Bytes free for tensors on the device in use: available host RAM on the CPU, or the device's total
    memory minus what MindSpore holds on GPU/Ascend."""
    if on_cpu():
        import psutil
        return int(psutil.virtual_memory().available)
    total = ms.hal.get_device_properties(0).total_memory
    return int(total - ms.runtime.memory_reserved())
