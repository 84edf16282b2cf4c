"""Evaluate a FractalMIDI model against the validation songs: musical metrics and adherence.

    python scripts/evaluate_model.py --model checkpoints/fractalmidi-pop909-small \
        --dataset data_cache/pop909 [--num-samples 64] [--bars 32] [--cfg 1.0 1.5 2.0 3.0] [--json OUT]

Prints two tables:
1. Musical metrics, mean ± std: `--num-samples` pieces generated freely (seeds 0..K-1, 4/4,
   `--bars` bars each) next to windows of the same number of bars from the validation songs
   (one window per song, from its start, songs the model never trained on), and whether
   each generated mean lies within one standard deviation of the validation mean.
2. Structure adherence: for every validation window, its real per-bar density curve is given
   to `generate` as the structure to follow; the Pearson r and mean absolute error between the
   requested and the realised per-bar density (onsets per step), per guidance scale `--cfg`.
   Also the tempo error when the window's real tempo curve is given.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from fractalmidi import FractalMIDIModel
from fractalmidi.data import load_dataset_dir, row_to_piece
from fractalmidi.metrics import METRIC_KEYS, density_adherence, evaluate_piece, summarize, tempo_adherence


def validation_windows(dataset: str, bars: int) -> list:
    """From every validation song, its first run of `bars` consecutive 4/4 bars (if any)."""
    ds = load_dataset_dir(dataset, split="validation")
    out = []
    for row in ds:
        piece = row_to_piece(row)
        four = np.all(piece.time_signatures == [4, 4], axis=1)  # (B,)
        for first in range(piece.num_bars - bars + 1):
            if four[first : first + bars].all():
                out.append((row["song_id"], piece.crop_bars(first, first + bars)))
                break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a dataset folder from `fractalmidi build-dataset`")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--bars", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=None, help="default: the model's default_temperature")
    ap.add_argument("--top-p", type=float, default=None, help="default: the model's default_top_p")
    ap.add_argument("--iterations", type=int, nargs="+", default=None, help="decoding iterations per level")
    ap.add_argument("--refine-rounds", type=int, default=None)
    ap.add_argument("--no-follow", action="store_true", help="generate(follow_structure=False): no onset plan")
    ap.add_argument("--remask-mode", choices=["confidence", "random"], default=None,
                    help="which tokens stay masked between iterations (default: the model's config)")
    ap.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--free-cfg", type=float, default=None, help="guidance for the free samples (default: the first --cfg)")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = FractalMIDIModel.from_pretrained(args.model).eval()
    if args.temperature is None:
        args.temperature = model.generation_config.temperature
    if args.top_p is None:
        args.top_p = model.generation_config.top_p
    if args.iterations:
        model.generation_config.num_iterations = args.iterations
    if args.refine_rounds is not None:
        model.generation_config.refine_rounds = args.refine_rounds
    if args.remask_mode:
        model.config.remask_mode = args.remask_mode
    t0 = time.perf_counter()

    # ---- 1. free generation against the validation songs
    windows = validation_windows(args.dataset, args.bars)
    real = [evaluate_piece(p) for _, p in windows]
    free_cfg = args.free_cfg if args.free_cfg is not None else args.cfg[0]
    gen = []
    for seed in range(args.num_samples):
        piece = model.generate(num_bars=args.bars, seed=seed, temperature=args.temperature, guidance_scale=free_cfg, top_p=args.top_p,
                               follow_structure=not args.no_follow).to_piece()
        gen.append(evaluate_piece(piece))
    real_s, gen_s = summarize(real), summarize(gen)
    print(f"Musical metrics: {args.num_samples} generated pieces of {args.bars} bars (cfg {free_cfg}, "
          f"temperature {args.temperature}, top_p {args.top_p}, re-masking {model.config.remask_mode}, "
          f"iterations {model.generation_config.num_iterations}, refinement rounds {model.generation_config.refine_rounds}) vs {len(windows)} validation windows of {args.bars} bars (4/4)")
    print(f"| metric | generated | validation | within 1 std |")
    print(f"|---|---|---|---|")
    rows = {}
    for k in METRIC_KEYS:
        if k.startswith("n_"):
            continue
        gm, gs, _ = gen_s[k]
        rm, rs, _ = real_s[k]
        ok = abs(gm - rm) <= rs
        rows[k] = dict(generated=[gm, gs], validation=[rm, rs], within_one_std=bool(ok))
        print(f"| {k} | {gm:.3f} ± {gs:.3f} | {rm:.3f} ± {rs:.3f} | {'yes' if ok else f'no ({abs(gm - rm) / rs:.1f} std)'} |")

    # ---- 2. adherence to real structure the model never saw
    print(f"\nDensity adherence: the per-bar density of each validation window given as structure")
    print(f"| cfg | Pearson r (mean over songs) | r of all bars pooled | MAE (onsets/step) | tempo MAE (BPM) | seconds |")
    print(f"|---|---|---|---|---|---|")
    adherence = {}
    for scale in args.cfg:
        t1 = time.perf_counter()
        rs_, maes, req_all, got_all, tempo_err = [], [], [], [], []
        for i, (_, w) in enumerate(windows):
            density, tempo = w.bar_density().tolist(), w.bar_tempo().tolist()
            piece = model.generate(num_bars=args.bars, seed=1000 + i, temperature=args.temperature, guidance_scale=scale, top_p=args.top_p, follow_structure=not args.no_follow,
                                   structure={"density": density, "tempo": tempo}).to_piece()
            a = density_adherence(density, piece.bar_density())
            if not math.isnan(a["pearson_r"]):
                rs_.append(a["pearson_r"])
            maes.append(a["mae"])
            req_all += density
            got_all += piece.bar_density().tolist()
            tempo_err.append(tempo_adherence(tempo, piece.bar_tempo())["mae"])
        pooled = density_adherence(req_all, got_all)["pearson_r"]
        adherence[scale] = dict(mean_r=float(np.mean(rs_)), pooled_r=pooled, mae=float(np.mean(maes)),
                                tempo_mae=float(np.mean(tempo_err)), songs=len(windows))
        print(f"| {scale:g} | {np.mean(rs_):.3f} | {pooled:.3f} | {np.mean(maes):.3f} | {np.mean(tempo_err):.2e} | "
              f"{time.perf_counter() - t1:.0f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(metrics=rows, adherence=adherence, args=vars(args)), f, indent=1)


if __name__ == "__main__":
    main()
