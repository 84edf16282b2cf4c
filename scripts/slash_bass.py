"""How often a slash chord's bass is the lowest note: for each of F/A, C/E and G/B held for
four bars, `--seeds` pieces (seeds 0..), the share of bars whose lowest starting note
(accompaniment and melody) has the bass's pitch class.

    python scripts/slash_bass.py [--model checkpoints/fractalmidi-pop909-songs] [--seeds 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fractalmidi import FractalMIDIModel, controls  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=controls.DEFAULT_MODEL)
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args(argv)
    if not 1 <= args.seeds <= 64:
        ap.error(f"--seeds must be 1-64, got {args.seeds}")
    model = FractalMIDIModel.from_pretrained(args.model).eval()
    total_hits = total_bars = 0
    print("| chord | bars whose lowest note is the bass | lowest notes (MIDI) |")
    print("|---|---|---|")
    for text in ("F/A", "C/E", "G/B"):
        chords = controls.chords(" ".join([text] * 4))
        bass = chords[0][0][2]
        hits = bars = 0
        lows = set()
        with torch.no_grad():
            for seed in range(args.seeds):
                piece = model.generate(num_bars=4, seed=seed, chords=chords).to_piece()
                for b in range(4):
                    notes = piece.notes[(piece.notes[:, 1] >= piece.bar_starts[b]) & (piece.notes[:, 1] < piece.bar_starts[b + 1])]
                    if len(notes):
                        low = int(notes[:, 0].min())
                        bars += 1
                        hits += low % 12 == bass
                        lows.add(low)
        total_hits, total_bars = total_hits + hits, total_bars + bars
        print(f"| {text} | {hits} of {bars} | {', '.join(map(str, sorted(lows)))} |")
    print(f"all: {total_hits} of {total_bars} bars")
    return total_hits, total_bars


if __name__ == "__main__":
    main()
