"""Benchmark: build the training dataset from a MIDI folder and print what it took.

    python scripts/bench_build_dataset.py ../shared/data/pop909 /tmp/pop909_ds [--num-proc 2]

Runs `fractalmidi.data.build_dataset` (read every file, skip bad ones, split, save_to_disk
atomically with build_report.json) and prints one table: songs, skipped, notes, bars,
seconds (the whole build, reading and saving) and MB on disk. Skipped files are listed below.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fractalmidi.data import build_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("midi_dir", help="folder of MIDI files (POP909 layout: NNN/NNN.mid + beat_midi.txt)")
    parser.add_argument("out_dir", help="where to save the dataset (replaced if it is a previous build)")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes reading files (default 1)")
    parser.add_argument("--steps-per-beat", type=int, default=4)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    ds, report = build_dataset(
        args.midi_dir, args.out_dir, steps_per_beat=args.steps_per_beat,
        num_proc=args.num_proc, progress=not args.no_progress,
    )
    header = ("songs", "skipped", "notes", "bars", "hours", "train", "valid", "seconds", "MB on disk")
    values = (
        f"{report.songs}", f"{len(report.skipped)}", f"{report.notes}", f"{report.bars}",
        f"{report.hours:.1f}", f"{report.splits['train']}", f"{report.splits['validation']}",
        f"{report.seconds:.1f}", f"{report.size_bytes / 1e6:.1f}",
    )
    widths = [max(len(h), len(v)) for h, v in zip(header, values)]
    print(f"build_dataset({args.midi_dir}, num_proc={args.num_proc}) -> {args.out_dir}")
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    print("| " + " | ".join(v.rjust(w) for v, w in zip(values, widths)) + " |")
    for s in report.skipped:
        print(f"skipped {s['source']}: {s['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
