"""Round trip of a MIDI corpus through the grid, measured against positions from the beat files.

    python scripts/check_roundtrip.py ../shared/data/pop909 [--steps-per-beat 4]

For every song with a beat file: reference grid positions are computed here, independently
of `read_midi`, from the notes' times in seconds (symusic) and the annotated beats: a note's
step is its beat position (linear between annotated beats) times steps_per_beat, rounded, and
a note lasts at least one step. The song then goes through `quantize` (read per track with
its beat file, write, read back without it), and we count how many reference notes come back
with the same (pitch, onset step, offset step, velocity), whether the bars are the same, and
the largest per-bar tempo error. Prints a table: overall, the worst songs, and the time taken.
"""

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import symusic

from fractalmidi.midi_io import find_midi_files, read_beats, read_midi_tracks, write_midi


def reference_notes(midi: Path, beats: Path, spb: int) -> collections.Counter:
    times, _ = read_beats(beats)
    rows = []
    for track in symusic.Score(str(midi)).to("second").tracks:
        for n in track.notes:
            rows.append((n.pitch, n.time, n.time + n.duration, n.velocity))
    a = np.array(rows, dtype=np.float64)

    def step(seconds):  # linear between annotated beats, extended at the first / last interval
        i = np.clip(np.searchsorted(times, seconds, side="right") - 1, 0, len(times) - 2)
        return np.floor((i + (seconds - times[i]) / (times[i + 1] - times[i])) * spb + 0.5).astype(int)

    on, off = step(a[:, 1]), step(a[:, 2])
    off = np.maximum(off, on + 1)
    return collections.Counter(zip(a[:, 0].astype(int).tolist(), on.tolist(), off.tolist(), a[:, 3].astype(int).tolist()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("midi_dir")
    ap.add_argument("--steps-per-beat", type=int, default=4)
    ap.add_argument("--worst", type=int, default=5)
    args = ap.parse_args()
    spb = args.steps_per_beat
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for midi, beats in find_midi_files(args.midi_dir):
            if beats is None:
                continue
            ref = reference_notes(midi, beats, spb)
            tracks, report = read_midi_tracks(midi, beats=beats, steps_per_beat=spb)
            out = Path(tmp) / "q.mid"
            write_midi(tracks, out)
            back, _ = read_midi_tracks(out, beats=None, steps_per_beat=spb)  # our own file, on its ticks
            shift = report.first_beat_step  # where annotated beat 0 sits in the piece
            notes = np.concatenate([p.notes for _, p in back])
            got = collections.Counter(
                zip(notes[:, 0].tolist(), (notes[:, 1] - shift).tolist(), (notes[:, 2] - shift).tolist(), notes[:, 3].tolist())
            )
            a, b = tracks[0][1], back[0][1]
            same_bars = np.array_equal(a.bar_starts, b.bar_starts) and np.array_equal(a.time_signatures, b.time_signatures)
            results.append((str(midi), sum(ref.values()), sum((ref & got).values()), same_bars,
                            float(np.abs(a.bar_tempo() - b.bar_tempo()).max())))
    seconds = time.perf_counter() - t0
    total = sum(r[1] for r in results)
    kept = sum(r[2] for r in results)
    rates = np.array([r[2] / r[1] for r in results])
    print(f"| songs | notes | notes surviving | songs >= 99% | same bars | worst tempo error (BPM) | seconds |")
    print(f"|---|---|---|---|---|---|---|")
    print(f"| {len(results)} | {total} | {100 * kept / total:.2f}% | {100 * np.mean(rates >= 0.99):.1f}% | "
          f"{sum(r[3] for r in results)}/{len(results)} | {max(r[4] for r in results):.1e} | {seconds:.1f} |")
    print("\nworst songs:")
    for i in np.argsort(rates)[: args.worst]:
        print(f"  {results[i][0]}: {results[i][2]}/{results[i][1]} = {100 * rates[i]:.1f}%")


if __name__ == "__main__":
    main()
