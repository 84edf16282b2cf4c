"""Reference values of the song metrics on real songs (POP909), with real-vs-real floors.

    python scripts/reference_metrics.py ../shared/data/pop909 [--bars 32] [--json OUT]

For every song (its MIDI with the beat file beside it, all tracks merged, 4 steps per beat):
the first run of `--bars` consecutive 4/4 bars (`metrics.first_bars`; `--bars 0`: whole songs).
Prints, as a Markdown table, mean ± std over the songs of every metric in `METRIC_KEYS`, for the
train and the validation songs (`data.split_of`, the split the model trains on) and all songs;
the melody metrics twice, on the MELODY track and on the top voice of all tracks merged. Then the
per-bar feature Frechet distance between real sets (the floor a model can hope for): train vs
validation, and odd vs even song numbers (two halves). With `--subsets K`: also the distance of
K train songs drawn at random (20 draws) to the validation songs, mean ± std: what a model that
writes exactly like the training songs would score with K pieces (the distance grows as the
sets shrink, so compare a model's K pieces with this, not with train vs validation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fractalmidi.data import song_id_for, split_of  # noqa: E402
from fractalmidi.errors import InputError  # noqa: E402
from fractalmidi.metrics import (  # noqa: E402
    METRIC_KEYS, bar_features, evaluate_piece, first_bars, frechet_distance, melody_motion, summarize,
)
from fractalmidi.midi_io import find_midi_files, read_midi, read_midi_tracks  # noqa: E402


def subset_distances(train: list, validation: np.ndarray, k: int, draws: int = 20, seed: int = 0) -> np.ndarray:
    """Frechet distances to `validation` (pooled per-bar features) of `draws` sets of `k` songs
    drawn without replacement from `train` (one per-bar feature array per song), seeded."""
    if not 2 <= k <= len(train):
        raise ValueError(f"--subsets {k}: give 2 to {len(train)} (the train songs)")
    rng = np.random.default_rng(seed)
    return np.array([frechet_distance(np.concatenate([train[i] for i in rng.choice(len(train), k, replace=False)]),
                                      validation) for _ in range(draws)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--bars", type=int, default=32, help="first N consecutive 4/4 bars of each song; 0: whole songs")
    ap.add_argument("--subsets", type=int, default=0, metavar="K",
                    help="also the distance of K random train songs to the validation songs (20 draws)")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()
    if args.subsets and args.subsets < 2:
        ap.error(f"--subsets must be 2 or more, got {args.subsets}")
    folder = Path(args.folder)
    songs, skipped = [], []
    for f, beats in find_midi_files(folder):
        try:
            piece, _ = read_midi(f, beats=beats)
            tracks, _ = read_midi_tracks(f, beats=beats)
        except InputError as e:
            skipped.append(str(e))
            continue
        melody = next((p for name, p in tracks if name.lower() == "melody"), None)
        if args.bars:
            window = first_bars(piece, args.bars)
            if window is None:
                skipped.append(f"{f}: no {args.bars} consecutive 4/4 bars")
                continue
            first, piece = window
            melody = melody.crop_bars(first, first + args.bars) if melody is not None else None
        sid = song_id_for(f.relative_to(folder))
        row = evaluate_piece(piece, melody)
        row["top_voice_step_share"], row["top_voice_mean_leap"] = melody_motion(piece)
        row["melody_source"] = "MELODY" if melody is not None else "top voice"
        songs.append(dict(id=sid, split=split_of(sid), row=row, features=bar_features(piece)))
    keys = [k for k in METRIC_KEYS if not k.startswith("n_")] + ["top_voice_step_share", "top_voice_mean_leap"]
    groups = {"train": [s for s in songs if s["split"] == "train"],
              "validation": [s for s in songs if s["split"] == "validation"], "all": songs}
    summ = {g: summarize([{k: s["row"][k] for k in keys} for s in ss]) for g, ss in groups.items()}
    what = f"first {args.bars} consecutive 4/4 bars" if args.bars else "whole songs"
    n_mel = sum(s["row"]["melody_source"] == "MELODY" for s in songs)
    print(f"{len(songs)} songs ({what}; MELODY track in {n_mel}), {len(skipped)} left out; "
          f"train {len(groups['train'])}, validation {len(groups['validation'])}")
    print("| metric | train | validation | all |")
    print("|---|---|---|---|")
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{summ[g][k][0]:.3f} ± {summ[g][k][1]:.3f}" for g in groups) + " |")

    def pooled(ss):
        return np.concatenate([s["features"] for s in ss])

    odd = [s for s in songs if s["id"][-1:].isdigit() and int(s["id"][-1]) % 2]
    even = [s for s in songs if s not in odd]
    floors = {
        "train_vs_validation": frechet_distance(pooled(groups["validation"]), pooled(groups["train"])),
        "odd_vs_even": frechet_distance(pooled(odd), pooled(even)),
    }
    print(f"per-bar feature Frechet distance, real vs real: validation vs train {floors['train_vs_validation']:.4f} "
          f"({len(pooled(groups['validation']))} vs {len(pooled(groups['train']))} bars); "
          f"odd vs even song numbers {floors['odd_vs_even']:.4f} ({len(odd)} vs {len(even)} songs)")
    if args.subsets:
        d = subset_distances([s["features"] for s in groups["train"]], pooled(groups["validation"]), args.subsets)
        floors[f"train_{args.subsets}_songs_vs_validation"] = dict(mean=float(d.mean()), std=float(d.std()),
                                                                   min=float(d.min()), max=float(d.max()))
        print(f"{args.subsets} train songs drawn at random vs validation (20 draws): {d.mean():.3f} ± {d.std():.3f} "
              f"(min {d.min():.3f}, max {d.max():.3f})")
    for s in skipped:
        print(f"left out: {s}", file=sys.stderr)
    if args.json:
        out = {"songs": len(songs), "window": what, "skipped": skipped, "frechet_floor": floors,
               "summary": {g: {k: dict(zip(("mean", "std", "count"), v)) for k, v in summ[g].items()} for g in groups}}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
