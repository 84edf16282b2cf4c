"""Time the shipped model's `generate` alone, per level: one process, batch 1, after a warm-up.

    python -m benchmarks.generate_time [--model DIR] [--bars 256] [--repeats 5] [--threads 2]

Prints each run's seconds, their median, the sequential network passes, and the mean time of
each level (from the progress callback: the time from the previous pass to each of the level's
passes). The bench against the autoregressive baseline is `benchmarks/bench.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fractalmidi import FractalMIDIModel
from fractalmidi.controls import DEFAULT_MODEL


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--bars", type=int, default=256, help="4/4 bars of 16 steps (default 256: 4096 steps)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not (1 <= args.bars <= 1024 and 1 <= args.repeats <= 50 and 1 <= args.threads <= 256):
        ap.error("--bars 1-1024, --repeats 1-50, --threads 1-256")
    torch.set_num_threads(args.threads)
    model = FractalMIDIModel.from_pretrained(args.model).eval()
    times, split = [], {}
    with torch.inference_mode():
        model.generate(args.bars, seed=0)  # warm-up
        for r in range(args.repeats):
            marks = []
            t0 = time.perf_counter()
            out = model.generate(args.bars, seed=r, progress=lambda level, *_: marks.append((level, time.perf_counter())))
            times.append(time.perf_counter() - t0)
            prev = t0
            for level, t in marks:
                split[level] = split.get(level, 0.0) + (t - prev) / args.repeats
                prev = t
    steps = int(out.states.shape[1])
    print(f"{args.model}: {steps} steps, float32, {args.threads} threads, {out.num_forward_passes} passes")
    print("| runs (s) | median (s) | " + " | ".join(split) + " |")
    print("|---|---|" + "---|" * len(split))
    print(f"| {' / '.join(f'{t:.2f}' for t in times)} | {statistics.median(times):.2f} | "
          + " | ".join(f"{v:.2f}" for v in split.values()) + " |")


if __name__ == "__main__":
    main()
