"""Memory budgets and the pure arithmetic that turns them into chunk sizes.

No tensors here: budgets are bytes, shapes are integers, and every function is tested with exact tables.
`attention_chunks` decides how `models.attention.attention` runs (whole, query-chunked, or key-chunked
with an online softmax); `attention_budget` is the context manager through which the pipeline hands the
attention workspace budget to the models.
"""

import contextlib
import contextvars
import math
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction

from studio.errors import InputError, PlanError

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
_UNITS = {"b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1024 ** 4}

# Bytes held per attention score while a (q, k) block is computed: the fp32 scores, the masked copy and
# the fp32 probabilities can be alive at once (3 x 4 bytes), plus a cast copy for the p @ v product.
SCORE_BYTES = 16
# Bytes per query row and head-dimension element kept besides the scores: the output block and, when keys
# are chunked, the running accumulator and its rescaled copy (fp32).
ROW_BYTES = 12
# Query rows per block when keys must be chunked: small enough that the key block stays large.
KEY_CHUNK_Q_ROWS = 256
# Bytes per hidden unit of a transformer MLP while a block of token rows runs: the 4D-wide projection and
# the GELU's temporaries. Measured on the CPU: 2.26 GiB above baseline for 14563 x 4608 hidden units
# (~36 bytes each: MindSpore's pool keeps more temporaries alive than the expression needs).
MLP_BYTES_PER_HIDDEN = 40
# Automatic budgets leave this much of the free memory to the runtime, the OS and other processes.
AUTO_MARGIN = 1 * 1024 ** 3
# Below this many query rows per block, chunking keys is cheaper than ever-thinner query blocks.
MIN_Q_ROWS = 64
# The largest single tensor a planned step makes, whatever the budget (an attention block's fp32 scores on
# every device; a VAE feature map on the CPU only, `tensor_cap`): MindSpore's CPU allocator refuses single
# tensors above ~5.5 GiB (measured: 5 GiB allocates, 6 GiB fails with 22 GiB free).
MAX_TENSOR = 4 * GiB
# The largest memory budget taken: 16 EiB, all a 64-bit address space can hold.
MAX_BUDGET = 2 ** 64


def parse_bytes(value) -> int | None:
    """'6GiB', '512MiB', '2GB', '1.5g', '4000000B', a number of bytes (int, from Python) or None (automatic)
    -> bytes or None. Text needs its unit: is '6' bytes or GiB? InputError: 'memory budget <budget_problem>'."""
    n, problem = _read_bytes(value)
    if problem:
        raise InputError(f"memory budget {problem}")
    return n


def budget_problem(value) -> str | None:
    """Why `parse_bytes` refuses `value`, without the subject ("'6' has no unit: give one, ..."), or None."""
    return _read_bytes(value)[1]


def _read_bytes(value) -> tuple[int | None, str | None]:
    """(bytes or None for automatic, None) or (None, what is wrong): `parse_bytes`."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", "none")):
        return None, None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy's numbers too
        if not _finite(value):
            return None, f"must be a finite number of bytes, got {value!r}"
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if m and not m[2] and float(m[1]) > 0:
            return None, f"'{value}' has no unit: give one, e.g. 6GiB, 512MiB or 2GB"
        if not m or m[2] and m[2].lower() not in _UNITS:
            return None, f"'{value}' is not a size like 6GiB, 512MiB or 2GB"
        n = int(Fraction(m[1]) * _UNITS[m[2].lower()]) if m[2] else 0  # exact: '1.1GB' is 1,100,000,000 bytes
    if n <= 0:
        return None, f"must be positive, got {value!r}"
    if n > MAX_BUDGET:  # no memory is larger; past a float's range it could not be printed or planned with
        return None, f"must be at most 16 EiB ({MAX_BUDGET} bytes), got {value!r}"
    return n, None


def _finite(number: numbers.Real) -> bool:
    """Whether `number` is finite: an int or a Fraction too large for a float is."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return True


def auto_budget(free: int) -> int:
    """The automatic budget: free memory minus AUTO_MARGIN, but never below half of what is free."""
    return max(free - AUTO_MARGIN, free // 2)


def resolve_budget(value, resident=None) -> int:
    """A budget argument in bytes (`parse_bytes`); None: automatic, from the memory free on the device in use
    now, plus `resident()` (the bytes of weights already loaded, which the plan counts again) when given."""
    budget = parse_bytes(value)
    if budget is None:
        from studio import backend
        budget = auto_budget(backend.free_memory()) + (resident() if resident else 0)
    return budget


def tensor_cap() -> int | None:
    """The largest single tensor the device in use allocates, for the memory plan's `max_tensor`: MAX_TENSOR
    on the CPU (its allocator's limit), None on GPU/Ascend, where the budget (the device's memory) is the
    limit. Sets the context first ($STUDIO_DEVICE), as `backend.free_memory` does."""
    from studio import backend
    backend.setup()
    return MAX_TENSOR if backend.on_cpu() else None


def format_bytes(n: int | float, up: bool = False) -> str:
    """Bytes to two decimals of the largest binary unit; `up` rounds up, so that a minimum the user may
    pass back as a budget ('at least 33.78 MiB') is never printed below itself."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{(math.ceil(n * 100 / size) / 100 if up else n / size):.2f} {unit}"
    return f"{math.ceil(n) if up else int(n)} B"


@dataclass(frozen=True)
class AttentionChunks:
    """How one attention call runs: queries in blocks of `q`, keys in blocks of `k` (k == nk: all keys,
    plain softmax; k < nk: online softmax across key blocks)."""

    q: int
    k: int

    def mode(self, nq: int, nk: int) -> str:
        if self.k < nk:
            return "key-chunked"
        return "whole" if self.q >= nq else "query-chunked"


def attention_workspace(bh: int, q_rows: int, k_cols: int, head_dim: int) -> int:
    """Bytes one (q_rows x k_cols) block of attention over `bh` batch-heads holds beyond its inputs."""
    return bh * q_rows * (k_cols * SCORE_BYTES + head_dim * ROW_BYTES)


def attention_chunks(bh: int, nq: int, nk: int, head_dim: int, budget: int | None) -> AttentionChunks:
    """Largest blocks whose workspace fits `budget` bytes (None: unbounded) and whose scores stay within
    MAX_TENSOR, whatever the budget: MindSpore could not allocate a larger one."""
    cap = MAX_TENSOR // 4 * SCORE_BYTES  # the 4-byte scores are 1/4 of SCORE_BYTES
    budget = cap if budget is None else min(budget, cap)
    if attention_workspace(bh, nq, nk, head_dim) <= budget:
        return AttentionChunks(nq, nk)
    q = budget // attention_workspace(bh, 1, nk, head_dim)
    if q >= MIN_Q_ROWS or (q >= 1 and nq <= MIN_Q_ROWS):
        return AttentionChunks(int(min(q, nq)), nk)
    q = min(KEY_CHUNK_Q_ROWS, nq)
    # the accumulators leave half for the scores, and room for one key at least (with head_dim 1, half can be
    # less than a key's SCORE_BYTES per row: the key block would round to 0)
    while q > 1 and max(2 * bh * q * head_dim * ROW_BYTES, attention_workspace(bh, q, 1, head_dim)) > budget:
        q //= 2
    k = (budget - bh * q * head_dim * ROW_BYTES) // (bh * q * SCORE_BYTES)
    if k < 1:
        need = attention_workspace(bh, 1, 1, head_dim)
        raise PlanError(f"attention over {bh} heads x {nq} x {nk} tokens needs at least "
                        f"{format_bytes(need, up=True)} of workspace; the budget gives {format_bytes(budget)}")
    return AttentionChunks(q, int(min(k, nk)))


def mlp_rows(n_rows: int, hidden: int, budget: int | None) -> int:
    """Token rows per MLP block so that rows x hidden units x MLP_BYTES_PER_HIDDEN fit `budget` (None:
    unbounded) and the block's fp32 hidden activations stay within MAX_TENSOR."""
    rows = min(n_rows, MAX_TENSOR // (hidden * 4))
    if budget is not None:
        rows = min(rows, budget // (hidden * MLP_BYTES_PER_HIDDEN))
    return int(max(1, rows))


_ATTENTION_BUDGET: contextvars.ContextVar[int | None] = contextvars.ContextVar("attention_budget", default=None)


@contextlib.contextmanager
def attention_budget(nbytes: int | None):
    """Within this block, every attention call and every transformer MLP keeps its workspace (scores,
    or the wide hidden activations) under `nbytes` (None: unbounded)."""
    token = _ATTENTION_BUDGET.set(nbytes)
    try:
        yield
    finally:
        _ATTENTION_BUDGET.reset(token)


def current_attention_budget() -> int | None:
    return _ATTENTION_BUDGET.get()
