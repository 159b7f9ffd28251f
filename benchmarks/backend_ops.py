"""The op choices in studio/backend.py, timed against the alternatives they replaced and against torch.

    python benchmarks/backend_ops.py [--reps 5]

Each row: milliseconds per call (best of --reps after one warm-up) for studio's formulation, the plain
MindSpore one, and torch, on the shapes where the choice was made.
"""

import argparse
import time

import numpy as np


def best(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        if hasattr(out, "asnumpy"):
            out.asnumpy()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import mindspore as ms
    import torch
    from mindspore import ops

    from studio import backend

    backend.setup()
    rng = np.random.default_rng(0)

    def arrays(*shapes):
        return [rng.standard_normal(s, dtype=np.float32) for s in shapes]

    rows = []
    # linear (2048 x 1152) @ (4608 x 1152)^T + bias: the transformer MLP at 512^2, CFG batch 2
    x, w, b = arrays((2, 1024, 1152), (4608, 1152), (4608,))
    mx, mw, mb = ms.Tensor(x), ms.Tensor(w), ms.Tensor(b)
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
    rows.append(("linear 2048x1152 -> 4608", best(lambda: backend.linear(mx, mw, mb), args.reps),
                 "ops.dense", best(lambda: ops.dense(mx, mw, mb), args.reps),
                 best(lambda: torch.nn.functional.linear(tx, tw, tb), args.reps)))
    # q k^T of one attention block: 4 batch-heads x 914 queries x 32400 keys x 16
    q, k = arrays((2, 2, 914, 16), (2, 2, 32400, 16))
    mq, mk, tq, tk = ms.Tensor(q), ms.Tensor(k), torch.from_numpy(q), torch.from_numpy(k)
    rows.append(("q k^T 4 x 914 x 32400 x 16", best(lambda: backend.bmm(mq, mk, transpose_b=True), args.reps),
                 "matmul(q, k.swapaxes)", best(lambda: ops.matmul(mq, mk.swapaxes(-1, -2)), args.reps),
                 best(lambda: tq @ tk.transpose(-1, -2), args.reps)))
    # GroupNorm (1, 128, 512, 512), 32 groups
    g, gw, gb = arrays((1, 128, 512, 512), (128,), (128,))
    mg, mgw, mgb = ms.Tensor(g), ms.Tensor(gw), ms.Tensor(gb)
    tg, tgw, tgb = torch.from_numpy(g), torch.from_numpy(gw), torch.from_numpy(gb)

    def two_pass():
        xf = mg.reshape(1, 32, -1)
        mean = xf.mean(axis=-1, keep_dims=True)
        var = ops.square(xf - mean).mean(axis=-1, keep_dims=True)
        y = ((xf - mean) * ops.rsqrt(var + 1e-6)).reshape(mg.shape)
        return y * mgw.reshape(1, -1, 1, 1) + mgb.reshape(1, -1, 1, 1)

    rows.append(("GroupNorm 1 x 128 x 512^2", best(lambda: backend.group_norm(mg, 32, mgw, mgb, 1e-6), args.reps),
                 "two-pass broadcast", best(two_pass, args.reps),
                 best(lambda: torch.nn.functional.group_norm(tg, 32, tgw, tgb, 1e-6), args.reps)))
    # conv bias (1, 128, 512, 512)
    rows.append(("conv bias 1 x 128 x 512^2", best(lambda: ops.bias_add(mg, mgb), args.reps),
                 "broadcast add", best(lambda: mg + mgb.reshape(1, -1, 1, 1), args.reps),
                 best(lambda: tg + tgb.reshape(1, -1, 1, 1), args.reps)))
    # GELU(tanh) on the MLP hidden at 512^2, CFG batch 2
    h, = arrays((2, 1024, 4608))
    mh, th = ms.Tensor(h), torch.from_numpy(h)
    rows.append(("GELU(tanh) 2 x 1024 x 4608", best(lambda: backend.gelu_tanh(mh), args.reps),
                 "ops.gelu(approximate='tanh')", best(lambda: ops.gelu(mh, approximate="tanh"), args.reps),
                 best(lambda: torch.nn.functional.gelu(th, approximate="tanh"), args.reps)))

    print(f"mindspore {ms.__version__}, torch {torch.__version__}; ms per call, best of {args.reps}")
    print("| op | studio (backend.py) | replaced form | replaced form ms | torch |")
    print("|---|---|---|---|---|")
    for name, ours, alt_name, alt, ref in rows:
        print(f"| {name} | {ours:.1f} | {alt_name} | {alt:.1f} | {ref:.1f} |")


if __name__ == "__main__":
    main()
