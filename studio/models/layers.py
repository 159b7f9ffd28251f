"""Small cells whose parameter names equal the diffusers/transformers checkpoint keys.

MindSpore's own nn.LayerNorm/nn.GroupNorm/nn.Embedding name their parameters gamma/beta/embedding_table;
these use weight/bias so that loading a checkpoint is a strict copy by name.
"""

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Zero, initializer

from studio import backend


def param(shape, dtype=ms.float32) -> Parameter:
    """A parameter filled later by the checkpoint loader (zeros until then)."""
    return Parameter(initializer(Zero(), tuple(shape), dtype))


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=ms.float32):
        super().__init__()
        self.weight = param((out_features, in_features), dtype)
        self.bias = param((out_features,), dtype) if bias else None

    def construct(self, x):
        return backend.linear(x, self.weight, self.bias)


class LayerNorm(nn.Cell):
    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, dtype=ms.float32):
        super().__init__()
        self.eps = eps
        self.weight = param((dim,), dtype) if elementwise_affine else None
        self.bias = param((dim,), dtype) if elementwise_affine else None

    def construct(self, x):
        return backend.layer_norm(x, self.weight, self.bias, self.eps)


class GroupNorm(nn.Cell):
    """GroupNorm, followed by SiLU when `silu` (the VAE's norm-then-activation, fused on the CPU)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6, dtype=ms.float32, silu: bool = False):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.silu = silu
        self.weight = param((num_channels,), dtype)
        self.bias = param((num_channels,), dtype)

    def construct(self, x, shift=None):
        """GroupNorm of x + shift; shift (C,): the previous conv's bias, not yet added to x (or None)."""
        return backend.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.silu, shift)


class Conv2d(nn.Cell):
    """2D convolution, (out, in, kh, kw) weight; zero padding: an int, or (top, bottom, left, right)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, groups=1,
                 dtype=ms.float32):
        super().__init__()
        self.weight = param((out_channels, in_channels // groups, kernel_size, kernel_size), dtype)
        self.bias = param((out_channels,), dtype) if bias else None
        self._conv = ops.Conv2D(out_channels, kernel_size, mode=1, pad_mode="pad", pad=padding, stride=stride,
                                group=groups)

    def construct(self, x):
        y = self._conv(x, self.weight)
        return y if self.bias is None else ops.bias_add(y, self.bias)  # 10x a broadcast add on the CPU

    def without_bias(self, x):
        """The convolution with its bias left for the next op to add in its own pass."""
        return self._conv(x, self.weight)


class Embedding(nn.Cell):
    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=ms.float32):
        super().__init__()
        self.weight = param((num_embeddings, embedding_dim), dtype)

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)
