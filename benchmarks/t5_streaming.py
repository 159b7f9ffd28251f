"""T5-XXL text encoding: studio's encoder loaded whole, studio's streamed encoder (block by block from the
weight files), and transformers' encoder loaded whole, on the same random weights written in the published
sharded layout (`text_encoder/`: config.json, model.safetensors.index.json, model-0000i-of-0000n.safetensors).

Usage: python benchmarks/t5_streaming.py [--layers 24] [--tokens 20] [--prompts 1] [--folder DIR] [--repeats 1]
       [--cold] [--runs transformers-whole studio-whole studio-streamed studio-streamed-each]

Each run is its own process: seconds to load, seconds to encode `--prompts` pairs of prompts of `--tokens`
real tokens (a prompt and its negative, as the pipelines encode them), peak RSS (the process's high-water
mark, which counts the weight files' pages while they are mapped), and the features' relative L2 error
against transformers'. The whole encoders are loaded once and called once per pair. studio-streamed reads
the encoder once for all pairs, each prompt encoded alone (as studio's pipeline encodes, and as a batch or
a layout with several layers encodes its prompts ahead); studio-streamed-each reads it once per pair (as
each batch item did before it encoded ahead). Writing 24 layers takes 19 GB of disk (`--folder` picks where;
it is kept for reruns when given, else deleted). Without --cold the runs read the files from the page cache as
far as memory holds them, which favours whichever run comes first after the files were written (and a run
holding 19 GB evicts the cache for the next); --cold empties the page cache before each run
(`/proc/sys/vm/drop_caches`: root only), so every run reads from disk.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# google/t5-v1_1-xxl's config.json (PixArt-Sigma's text_encoder), num_layers from --layers
T5_XXL = {"architectures": ["T5EncoderModel"], "d_ff": 10240, "d_kv": 64, "d_model": 4096,
          "dense_act_fn": "gelu_new", "feed_forward_proj": "gated-gelu", "is_gated_act": True,
          "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_heads": 64, "relative_attention_max_distance": 128,
          "relative_attention_num_buckets": 32, "vocab_size": 32128, "tie_word_embeddings": False}
SHARD_BYTES = 2 * 1024 ** 3
RUNS = ("transformers-whole", "studio-whole", "studio-streamed", "studio-streamed-each")


def tensor_shapes(layers: int):
    """(key, shape) of every T5 encoder weight, in the order transformers saves them."""
    d, ff, inner = T5_XXL["d_model"], T5_XXL["d_ff"], T5_XXL["num_heads"] * T5_XXL["d_kv"]
    yield "shared.weight", (T5_XXL["vocab_size"], d)
    for i in range(layers):
        a = f"encoder.block.{i}.layer.0."
        for name in "qkv":
            yield f"{a}SelfAttention.{name}.weight", (inner, d)
        yield f"{a}SelfAttention.o.weight", (d, inner)
        if i == 0:
            yield f"{a}SelfAttention.relative_attention_bias.weight", (T5_XXL["relative_attention_num_buckets"],
                                                                       T5_XXL["num_heads"])
        yield f"{a}layer_norm.weight", (d,)
        f = f"encoder.block.{i}.layer.1."
        yield f"{f}DenseReluDense.wi_0.weight", (ff, d)
        yield f"{f}DenseReluDense.wi_1.weight", (ff, d)
        yield f"{f}DenseReluDense.wo.weight", (d, ff)
        yield f"{f}layer_norm.weight", (d,)
    yield "encoder.final_layer_norm.weight", (d,)


def write_checkpoint(folder: Path, layers: int) -> None:
    """Random weights (scaled so activations stay near unit size) in shards of at most SHARD_BYTES, each
    written as soon as it fills."""
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(T5_XXL | {"num_layers": layers}, indent=2))
    rng = np.random.default_rng(0)
    shards: list[list[str]] = []  # the keys of each shard written
    current: dict[str, np.ndarray] = {}

    def flush() -> None:
        save_file(current, str(folder / f"model-{len(shards) + 1:05d}.tmp.safetensors"))
        shards.append(list(current))
        current.clear()

    for key, shape in tensor_shapes(layers):
        if len(shape) == 1:
            w = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif "shared" in key or "relative" in key:
            w = rng.standard_normal(shape, dtype=np.float32)
        else:
            w = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[1]))
        if current and sum(a.nbytes for a in current.values()) + w.nbytes > SHARD_BYTES:
            flush()
        current[key] = w
    flush()
    weight_map = {}
    for i, keys in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        (folder / f"model-{i:05d}.tmp.safetensors").rename(folder / name)
        weight_map.update({k: name for k in keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def inputs(tokens: int, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """`pairs` x 2 prompts of `tokens` real tokens each (as studio's pipeline encodes: no padding positions)."""
    rng = np.random.default_rng(1)
    return (rng.integers(3, T5_XXL["vocab_size"], (2 * pairs, tokens)).astype(np.int64),
            np.ones((2 * pairs, tokens), np.int64))


def worker(run: str, folder: Path, tokens: int, pairs: int, out: Path) -> dict:
    ids, mask = inputs(tokens, pairs)
    each_pair = [slice(2 * i, 2 * i + 2) for i in range(pairs)]
    t0 = time.perf_counter()
    if run == "transformers-whole":
        import torch
        from transformers import T5EncoderModel
        torch.set_num_threads(2)
        model = T5EncoderModel.from_pretrained(folder, dtype=torch.float32).eval()
        t1 = time.perf_counter()
        with torch.no_grad():
            features = np.concatenate([model(input_ids=torch.from_numpy(ids[p]),
                                             attention_mask=torch.from_numpy(mask[p])).last_hidden_state.numpy()
                                       for p in each_pair])
    else:
        import mindspore as ms

        from studio import backend
        from studio.models.t5 import StreamedT5Encoder, T5EncoderModel
        backend.setup()

        def alone(rows):  # each prompt on its own, as studio's pipeline encodes
            return [(ms.Tensor(ids[i:i + 1]), ms.Tensor(mask[i:i + 1])) for i in rows]
        if run == "studio-whole":
            encoder = T5EncoderModel.from_pretrained(folder)
            t1 = time.perf_counter()
            outputs = [y for p in each_pair for y in encoder.encode_each(alone(range(p.start, p.stop)))]
        elif run == "studio-streamed":
            encoder = StreamedT5Encoder(folder)
            t1 = time.perf_counter()
            outputs = encoder.encode_each(alone(range(2 * pairs)))
        else:  # studio-streamed-each
            t1 = time.perf_counter()
            outputs = [y for p in each_pair
                       for y in StreamedT5Encoder(folder).encode_each(alone(range(p.start, p.stop)))]
        features = np.concatenate([y.asnumpy() for y in outputs])
    t2 = time.perf_counter()
    np.save(out, features)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"load_s": t1 - t0, "encode_s": t2 - t1, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=1, help="pairs of prompts (a prompt and its negative)")
    parser.add_argument("--folder", type=Path, help="where the checkpoint is written (kept); default: a temporary one")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="empty the page cache before each run (root only)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=RUNS, help="default: all (transformers' is the "
                        "reference for the error column)")
    parser.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.tokens, args.prompts, args.out)), flush=True)
        return
    scratch = Path(tempfile.mkdtemp(prefix="t5-streaming-"))
    folder = args.folder or scratch / "text_encoder"
    try:
        if not (folder / "model.safetensors.index.json").is_file():
            t0 = time.perf_counter()
            write_checkpoint(folder, args.layers)
            print(f"wrote {args.layers} layers to {folder} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results = {}
        for rep in range(args.repeats):
            for run in args.runs:
                if args.cold:
                    os.sync()
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                out = scratch / f"{run}.npy"
                proc = subprocess.run([sys.executable, __file__, "--worker", run, "--folder", str(folder),
                                       "--tokens", str(args.tokens), "--prompts", str(args.prompts),
                                       "--out", str(out)],
                                      capture_output=True, text=True, check=True)
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                best = results.get(run)
                if best is None or r["load_s"] + r["encode_s"] < best["load_s"] + best["encode_s"]:
                    results[run] = r
        ref_file = scratch / "transformers-whole.npy"
        reference = np.load(ref_file) if ref_file.is_file() else None
        cache = "emptied before each run" if args.cold else "as left"
        print(f"T5-XXL encoder, {args.layers} of 24 layers, {args.prompts} x 2 prompts of {args.tokens} tokens, fp32 "
              f"(best of {args.repeats} by load + encode; page cache {cache})")
        print(f"{'run':<20}{'load s':>9}{'encode s':>10}{'total s':>9}{'peak RSS':>11}{'rel. L2 vs transformers':>26}")
        for run in args.runs:
            r = results[run]
            err = "-" if reference is None else \
                f"{np.linalg.norm(np.load(scratch / f'{run}.npy') - reference) / np.linalg.norm(reference):.1e}"
            print(f"{run:<20}{r['load_s']:>9.2f}{r['encode_s']:>10.2f}{r['load_s'] + r['encode_s']:>9.2f}"
                  f"{r['peak_rss'] / 1024 ** 3:>9.2f} GiB{err:>26}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
