"""The op choices in studio/backend.py, timed against the alternatives they replaced and against torch.

    python benchmarks/backend_ops.py [--reps 5]

Each row: milliseconds per call (best of --reps after one warm-up) for studio's formulation, the plain
MindSpore one, and torch, on the shapes where the choice was made. On the CPU studio's column includes the
fused kernels (studio/kernels) where backend.py uses them; STUDIO_CPU_KERNELS=0 shows its op chains instead.
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

    # adaLN at 512^2, CFG batch 2: x (2, 1024, 1152), per-sample shift/scale/gate (2, 1, 1152)
    a, y, sh, sc = arrays((2, 1024, 1152), (2, 1024, 1152), (2, 1, 1152), (2, 1, 1152))
    ma, my, msh, msc = (ms.Tensor(t) for t in (a, y, sh, sc))
    ta, ty, tsh, tsc = (torch.from_numpy(t) for t in (a, y, sh, sc))
    rows.append(("x * g, (2,1024,1152) by (2,1,1152)", best(lambda: ma * backend.expand(msc, ma.shape), args.reps),
                 "broadcast multiply", best(lambda: ma * msc, args.reps), best(lambda: ta * tsc, args.reps)))
    one, zero = ms.Tensor(np.ones(1152, np.float32)), ms.Tensor(np.zeros(1152, np.float32))
    layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-6)
    rows.append(("LayerNorm(x)(1 + scale) + shift", best(lambda: backend.modulated_layer_norm(ma, msh, msc, 1e-6),
                                                          args.reps),
                 "ops.LayerNorm, broadcast ops", best(lambda: layer_norm(ma, one, zero)[0] * (1 + msc) + msh, args.reps),
                 best(lambda: torch.nn.functional.layer_norm(ta, (1152,), eps=1e-6) * (1 + tsc) + tsh, args.reps)))
    rows.append(("x + gate * y", best(lambda: backend.gated_add(ma, msc, my), args.reps),
                 "broadcast multiply-add", best(lambda: ma + msc * my, args.reps),
                 best(lambda: ta + tsc * ty, args.reps)))
    # a self-attention projection to heads, channels-first vs tokens-first + head transpose
    wq, = arrays((1152, 1152))
    mwq, twq = ms.Tensor(wq), torch.from_numpy(wq)
    rows.append(("x -> heads (2, 16, 72, 1024)", best(lambda: backend.linear_channels_first(ma, mwq, None), args.reps),
                 "linear + transpose to (2,16,1024,72)",
                 best(lambda: backend.linear(ma, mwq, None).reshape(2, 1024, 16, 72).transpose(0, 2, 1, 3), args.reps),
                 best(lambda: (ta @ twq.T).view(2, 1024, 16, 72).transpose(1, 2).contiguous(), args.reps)))

    # T5-XXL's q projection to heads and its output projection from heads (2, 300, 4096), 64 heads x 64:
    # tokens-first + head transposes (studio's T5) vs channels-first, a product per sample
    h5, w5 = arrays((2, 300, 4096), (4096, 4096))
    mh5, mw5, th5, tw5 = ms.Tensor(h5), ms.Tensor(w5), torch.from_numpy(h5), torch.from_numpy(w5)
    rows.append(("T5 x -> heads (2, 64, 300, 64)",
                 best(lambda: backend.linear(mh5, mw5, None).reshape(2, 300, 64, 64).transpose(0, 2, 1, 3), args.reps),
                 "channels-first (2, 64, 64, 300)", best(lambda: backend.linear_channels_first(mh5, mw5, None), args.reps),
                 best(lambda: (th5 @ tw5.T).view(2, 300, 64, 64).transpose(1, 2).contiguous(), args.reps)))
    mo5, to5 = ms.Tensor(h5.reshape(2, 300, 64, 64).transpose(0, 2, 1, 3).copy()), torch.from_numpy(h5)
    mc5 = ms.Tensor(h5.reshape(2, 4096, 300).copy())
    rows.append(("T5 heads (2, 64, 300, 64) -> x",
                 best(lambda: backend.linear(mo5.transpose(0, 2, 1, 3).reshape(2, 300, 4096), mw5, None), args.reps),
                 "from channels-first (2, 4096, 300)",
                 best(lambda: backend.linear_from_channels_first(mc5, mw5, None), args.reps),
                 best(lambda: to5.view(2, 64, 300, 64).transpose(1, 2).reshape(2, 300, 4096) @ tw5.T, args.reps)))

    # T5-XXL's FFN input projection for one prompt of 40 tokens alone (as the pipeline encodes): few rows
    # against a wide weight
    x40, wi = arrays((1, 40, 4096), (10240, 4096))
    mx40, mwi, tx40, twi = ms.Tensor(x40), ms.Tensor(wi), torch.from_numpy(x40), torch.from_numpy(wi)
    tb_matmul = ops.MatMul(transpose_b=True)
    rows.append(("T5 linear, 40 tokens x 4096 -> 10240 ((W xᵀ)ᵀ)",
                 best(lambda: backend.linear(mx40, mwi, None), args.reps),
                 "MatMul(x, W, transpose_b)", best(lambda: tb_matmul(mx40.reshape(40, 4096), mwi), args.reps),
                 best(lambda: torch.nn.functional.linear(tx40, twi), args.reps)))

    print(f"mindspore {ms.__version__}, torch {torch.__version__}; ms per call, best of {args.reps}")
    print("| op | studio (backend.py) | replaced form | replaced form ms | torch |")
    print("|---|---|---|---|---|")
    for name, ours, alt_name, alt, ref in rows:
        print(f"| {name} | {ours:.1f} | {alt_name} | {alt:.1f} | {ref:.1f} |")


if __name__ == "__main__":
    main()
