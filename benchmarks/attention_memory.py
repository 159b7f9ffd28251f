"""Peak memory of one PixArt block under attention budgets, beside what unchunked attention would need.

One transformer block (1152 wide, 16 heads; at 65,536 tokens the head dimension is reduced to 8, so 128 wide,
to keep the run short) on a batch of 1 with 300 caption tokens, run in a fresh subprocess per (tokens, budget)
so each peak RSS is its own. The table shows peak RSS above the process's baseline (MindSpore loaded, weights
and inputs allocated), the planned attention workspace, and the workspace unchunked attention would need, and
how far the peak passes the budget (no budget: the planned workspace) plus the block's five full-size tensors
(negative: inside). The baseline is the RSS after building (VmRSS, after gc), not the peak so far: building
makes temporary numpy copies of the weights that are freed before the block runs. The peak is VmHWM, reset to
the baseline by /proc/self/clear_refs. Linux only.

    python benchmarks/attention_memory.py [--tokens 4096 16384 65536] [--budgets 1 2 4]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from decode_memory import rss_status

GiB = 1024 ** 3


def worker(tokens: int, budget_gib: float | None, head_dim: int) -> dict:
    import gc

    import mindspore as ms
    import numpy as np

    from studio import backend, memory
    from studio.models.transformer import PixArtBlock, PixArtTransformerConfig
    from studio.tiny import random_weights

    backend.setup()
    cfg = PixArtTransformerConfig(num_attention_heads=16, attention_head_dim=head_dim, num_layers=1,
                                  cross_attention_dim=16 * head_dim)
    block = PixArtBlock(cfg, ms.float32)
    params = dict(block.parameters_and_names())
    for name, w in random_weights(block, 0).items():
        params[name].set_data(ms.Tensor(w))
    rng = np.random.default_rng(0)
    d = cfg.inner_dim
    x = ms.Tensor(rng.standard_normal((1, tokens, d), dtype=np.float32))
    context = ms.Tensor(rng.standard_normal((1, 300, d), dtype=np.float32))
    mask = ms.Tensor(np.arange(300)[None, None, None, :] < 40)
    t6 = ms.Tensor(rng.standard_normal((1, 6 * d), dtype=np.float32) * 0.1)
    grid = (tokens // 64, 64) if tokens % 64 == 0 else (tokens, 1)
    gc.collect()
    baseline = rss_status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    budget = None if budget_gib is None else int(budget_gib * GiB)
    chunks = memory.attention_chunks(16, tokens, tokens, head_dim, budget)
    start = time.perf_counter()
    with memory.attention_budget(budget):
        out = block(x, block.context_keys_values(context), mask, t6, grid)
        out.asnumpy()
    seconds = time.perf_counter() - start
    peak = rss_status()["VmHWM"]
    weights = sum(p.nbytes for p in params.values())
    planned_workspace = memory.attention_workspace(16, chunks.q, chunks.k, head_dim)
    five_tensors = 5 * tokens * d * 4  # x, its norm, keys, values, output: the plan counts them as activations
    return {"tokens": tokens, "width": d, "budget": budget, "baseline": baseline, "peak": peak,
            "above_baseline": peak - baseline, "weights": weights, "seconds": seconds,
            "q_chunk": chunks.q, "k_chunk": chunks.k, "mode": chunks.mode(tokens, tokens),
            "planned_workspace": planned_workspace,
            "unchunked_workspace": memory.attention_workspace(16, tokens, tokens, head_dim),
            "over_budget_and_tensors": peak - baseline - (budget or planned_workspace) - five_tensors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 4], help="GiB")
    parser.add_argument("--unchunked-up-to", type=int, default=16384,
                        help="also run unchunked where the scores fit in RAM (tokens)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tokens, budget, head_dim = int(args.worker[0]), args.worker[1], int(args.worker[2])
        print(json.dumps(worker(tokens, None if budget == "none" else float(budget), head_dim)))
        return

    print("| tokens | width | budget | mode | q x k block | planned workspace | unchunked would need | "
          "peak above baseline | over budget + 5 tensors | weights | baseline RSS | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tokens in args.tokens:
        head_dim = 72 if tokens < 65536 else 8
        budgets = [str(b) for b in args.budgets] + (["none"] if tokens <= args.unchunked_up_to else [])
        for budget in budgets:
            proc = subprocess.run([sys.executable, __file__, "--worker", str(tokens), budget, str(head_dim)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"| {tokens} | | {budget} | failed: {proc.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            g = lambda n: f"{n / GiB:.2f} GiB"  # noqa: E731
            print(f"| {tokens} | {r['width']} | {budget if budget == 'none' else budget + ' GiB'} | {r['mode']} | "
                  f"{r['q_chunk']} x {r['k_chunk']} | {g(r['planned_workspace'])} | {g(r['unchunked_workspace'])} | "
                  f"{g(r['above_baseline'])} | {r['over_budget_and_tensors'] / 2 ** 20:+.0f} MiB | {g(r['weights'])} | "
                  f"{g(r['baseline'])} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
