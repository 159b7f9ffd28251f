"""Time a 20-item batch over 4 distinct prompts on the tiny checkpoint, with and without the T5 feature cache,
and the rerun of a finished batch of large outputs, with and without the cache's hash memo.

Usage: python benchmarks/batch_cache.py [--size 256] [--steps 2] [--rerun-size 2240]

A tiny random pipeline (studio make-tiny, 256 px bins) and a job of 4 prompts x 5 seeds are written to a
temporary folder. Each case runs `run_batch` in its own subprocess (models load once per batch, as in
`studio batch`) and reports the batch's wall time, the seconds spent in the text phase (each call's caption
features and the batch's encoding ahead, including reading T5's weights), how many prompts were encoded and
how often T5's weights were read (loaded whole, or streamed block by block for one call):

  no cache          every prompt encoded (--no-cache)
  cache, cold       an empty cache: each distinct prompt (and the empty negative prompt) encoded once
  cache, warm       a second batch on the same cache: no prompt encoded, T5 never loaded

each with T5 kept loaded between items (what the batch does when memory allows) and released before
every denoise (what it does when memory is tight: then T5 streams from its files, for the items' prompts
or, with the cache, for all of them in one pass before the first item). The files of every case must be
identical (sha256 from the manifests).

Then 10 items whose output is a --rerun-size px square PNG of noise (2240: 15 MB, which PNG can't compress)
are rendered once, and the finished batch is run again, which skips every item after checking its files:

  memo              the outputs' hashes from the cache's memo (.cache/file-hashes.json), no output read
  --no-cache        every output read and hashed (as every rerun did before the memo held outputs)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["a red fox in the snow", "misty mountains at dawn", "a lighthouse in a storm", "neon city at night"]
CASES = ("no cache", "cache, cold", "cache, warm")
RERUN_ITEMS = 10


def write_inputs(folder: Path, size: int, steps: int) -> None:
    from studio.tiny import make_tiny

    make_tiny(folder / "tiny", sample_size=32)
    (folder / "card.yaml").write_text(
        f"canvas: {{width: {size}, height: {size}}}\nvariables: {{prompt: x, seed: 0}}\n"
        f"layers:\n  - generate: {{prompt: \"{{prompt}}\", seed: \"{{seed}}\", steps: {steps}}}\n")
    prompts = ", ".join(json.dumps(p) for p in PROMPTS)
    (folder / "job.yaml").write_text(f"layout: card.yaml\nname: \"{{prompt_slug}}-{{seed}}\"\n"
                                     f"matrix:\n  prompt: [{prompts}]\n  seed: [1, 2, 3, 4, 5]\n")


def write_rerun_inputs(folder: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    (folder / "big.yaml").write_text(f"canvas: {{width: {side}, height: {side}}}\nvariables: {{k: '0'}}\n"
                                     "layers:\n  - image: {path: noise.png}\n")
    (folder / "rerun.yaml").write_text(f"layout: big.yaml\nname: 'big-{{k}}'\n"
                                       f"matrix: {{k: {list(range(RERUN_ITEMS))}}}\n")


def rerun_child(folder: Path, out: str, use_cache: bool) -> None:
    """Run the large-output job into `out`; print its seconds, items rendered and skipped, and MiB hashed."""
    import io

    from studio import batch, manifest

    read = {"bytes": 0}
    sha256_file = manifest.sha256_file

    def counted(path):
        read["bytes"] += Path(path).stat().st_size
        return sha256_file(path)

    manifest.sha256_file = counted
    job = batch.load_job(folder / "rerun.yaml", str(folder / "tiny"))
    start = time.perf_counter()
    summary = batch.run_batch(job, folder / out, use_cache=use_cache, memory_budget="4GiB", quiet=True,
                              out=io.StringIO())
    seconds = time.perf_counter() - start
    assert summary.exit_code == 0, summary
    print(json.dumps({"seconds": seconds, "rendered": len(summary.rendered), "skipped": len(summary.skipped),
                      "read_mib": read["bytes"] / 2**20}))


def child(folder: Path, out: str, cache: str, release: bool) -> None:
    import io

    from studio import batch
    from studio.models.t5 import StreamedT5Encoder, T5EncoderModel
    from studio.pipeline import PixArtSigmaPipeline

    counts = {"text_s": 0.0, "encoded": 0, "t5_loads": 0, "t5_streams": 0}
    load_t5 = T5EncoderModel.from_pretrained.__func__

    def timed(method):  # whatever it takes (prompts, max_sequence_length, stream, ...)
        def run(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                counts["text_s"] += time.perf_counter() - start
        return run

    def counted(method, streamed: bool):
        def run(self, inputs):
            counts["encoded"] += len(inputs)
            counts["t5_streams"] += streamed
            return method(self, inputs)
        return run

    def counted_load(cls, *args, **kwargs):
        counts["t5_loads"] += 1
        return load_t5(cls, *args, **kwargs)

    PixArtSigmaPipeline._caption_rows = timed(PixArtSigmaPipeline._caption_rows)  # each call's prompts, cache or T5
    PixArtSigmaPipeline.encode_ahead = timed(PixArtSigmaPipeline.encode_ahead)  # a batch's prompts, before its items
    T5EncoderModel.from_pretrained = classmethod(counted_load)
    T5EncoderModel.encode_each = counted(T5EncoderModel.encode_each, False)
    StreamedT5Encoder.encode_each = counted(StreamedT5Encoder.encode_each, True)
    if release:  # as when the memory budget can't hold T5 through denoising
        kept = batch._kept
        batch._kept = lambda generations: dict.fromkeys(kept(generations), False)
    job = batch.load_job(folder / "job.yaml", str(folder / "tiny"))
    start = time.perf_counter()
    summary = batch.run_batch(job, folder / out, cache_dir=folder / (cache or "unused"), use_cache=bool(cache),
                              memory_budget="4GiB", quiet=True, out=io.StringIO())
    seconds = time.perf_counter() - start
    assert summary.exit_code == 0 and len(summary.rendered) == 20, summary
    records = [json.loads(p.read_text()) for p in sorted((folder / out).glob("*.manifest.json"))]
    files = {f["path"]: f["sha256"] for r in records for f in r["files"]}
    print(json.dumps({"seconds": seconds, **counts, "files": files}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="canvas side, px")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per case; the fastest is shown")
    parser.add_argument("--rerun-size", type=int, default=2240, help="side of the rerun's outputs, px; 0: no rerun")
    parser.add_argument("--child", nargs=4, metavar=("FOLDER", "OUT", "CACHE", "RELEASE"), help=argparse.SUPPRESS)
    parser.add_argument("--rerun-child", nargs=3, metavar=("FOLDER", "OUT", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parents[1]))
    if args.child:
        folder, out, cache, release = args.child
        child(Path(folder), out, "" if cache == "-" else cache, release == "1")
        return
    if args.rerun_child:
        folder, out, cache = args.rerun_child
        rerun_child(Path(folder), out, cache == "1")
        return
    rows, files = [], None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, args.size, args.steps)
        for release in (False, True):
            for n, label in enumerate(CASES):
                runs = []
                for repeat in range(args.repeats):
                    # a cold run starts with an empty cache; a warm one uses the cache of the first cold run
                    cache = {0: "-", 1: f"cache-{int(release)}-{repeat}", 2: f"cache-{int(release)}-0"}[n]
                    out = f"out-{int(release)}-{n}-{repeat}"
                    cmd = [sys.executable, __file__, "--child", str(folder), out, cache, str(int(release))]
                    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    files = files or runs[-1]["files"]
                    assert runs[-1]["files"] == files, f"{label}: files differ from the first case"
                rows.append(("T5 released" if release else "T5 kept", label, min(runs, key=lambda r: r["seconds"])))
        reruns = rerun_cases(folder, args.rerun_size, args.repeats) if args.rerun_size else {}
    print(f"20 items (4 prompts x 5 seeds), {args.size}x{args.size} px, {args.steps} steps, tiny checkpoint, "
          f"1 process per run, fastest of {args.repeats}")
    print(f"{'T5':<13}{'case':<14}{'batch s':>9}{'text s':>9}{'encoded':>9}{'T5 loads':>10}{'T5 streams':>12}")
    for mode, label, r in rows:
        print(f"{mode:<13}{label:<14}{r['seconds']:9.2f}{r['text_s']:9.2f}{r['encoded']:9d}{r['t5_loads']:10d}"
              f"{r['t5_streams']:12d}")
    print("files: identical in every case (sha256)")
    if reruns:
        print(f"\nrerun of a finished batch: {RERUN_ITEMS} items, {args.rerun_size}x{args.rerun_size} px PNG of noise "
              f"each, all skipped, fastest of {args.repeats}")
        print(f"{'case':<14}{'batch s':>9}{'MiB hashed':>12}")
        for label, r in reruns.items():
            print(f"{label:<14}{r['seconds']:9.2f}{r['read_mib']:12.1f}")


def rerun_cases(folder: Path, side: int, repeats: int) -> dict:
    """Render the large-output job once (with the cache), then time its reruns with the memo and without."""
    write_rerun_inputs(folder, side)

    def batch(cache: bool) -> dict:
        cmd = [sys.executable, __file__, "--rerun-child", str(folder), "rerun-out", str(int(cache))]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert batch(True)["rendered"] == RERUN_ITEMS
    runs: dict = {"memo": [], "--no-cache": []}
    for _ in range(repeats):
        for label in runs:
            runs[label].append(batch(label == "memo"))
            assert runs[label][-1]["skipped"] == RERUN_ITEMS
    return {label: min(rs, key=lambda r: r["seconds"]) for label, rs in runs.items()}


if __name__ == "__main__":
    main()
