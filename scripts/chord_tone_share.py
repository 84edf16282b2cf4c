"""Chord-tone share of melody notes on strong beats in the real POP909 songs.

    python scripts/chord_tone_share.py ../shared/data/pop909 ../shared/data/pop909-structure \
        [--limit 200] [--melody midi|annotated] [--json out.json]

For every song with a MIDI folder and an annotation folder that aligns well
(`structure.align_song`: match >= structure.GOOD_MATCH), `metrics.chord_tone_share` of its
melody (default: the MIDI file's MELODY track, read on the beat grid of beat_midi.txt;
`--melody annotated`: the annotations' melody.txt laid on the same grid) against the aligned
per-beat chords of finalized_chord.txt. Prints mean +- population std (ddof=0) over the songs
with a value, the counts, and the songs that did not align or could not be read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fractalmidi.errors import InputError  # noqa: E402
from fractalmidi.metrics import chord_tone_share  # noqa: E402
from fractalmidi.midi_io import read_beats, read_midi_tracks  # noqa: E402
from fractalmidi.structure import (  # noqa: E402
    GOOD_MATCH,
    MELODY_TRACK,
    STEPS_PER_BEAT,
    align,
    read_annotations,
    song_pairs,
)


def song_share(midi: Path, ann_dir: Path, melody: str = "midi", threshold: float = GOOD_MATCH):
    """(aligned well, chord-tone share or NaN) of one song (as `structure.align_song`, keeping
    the MELODY track's `Piece` for its bars and time signatures)."""
    ann = read_annotations(ann_dir)
    pieces, report = read_midi_tracks(midi, steps_per_beat=STEPS_PER_BEAT)
    tracks = dict(pieces)
    if MELODY_TRACK not in tracks:
        raise InputError(f"{midi}: no {MELODY_TRACK} track")
    piece = tracks[MELODY_TRACK]
    if report.grid.startswith("beat file "):
        _, down = read_beats(Path(report.grid[len("beat file "):]))
        downbeats = report.first_beat_step + STEPS_PER_BEAT * np.nonzero(down)[0]
    else:
        downbeats = piece.bar_starts[:-1]
    a = align(ann, {n: p.notes for n, p in pieces}, piece.bar_starts, downbeats, threshold=threshold)
    if not a.aligned_well:
        return False, math.nan
    chords = np.stack([a.beat_root, a.beat_quality, a.beat_bass], axis=1)
    mel = piece if melody == "midi" else a.melody[(a.melody[:, 1] >= 0) & (a.melody[:, 1] < piece.num_steps)]
    return True, chord_tone_share(piece, chords, melody=mel)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pop909", type=Path)
    ap.add_argument("structure", type=Path)
    ap.add_argument("--limit", type=int, default=None, help="only the first N songs (in song order)")
    ap.add_argument("--melody", choices=("midi", "annotated"), default="midi")
    ap.add_argument("--threshold", type=float, default=GOOD_MATCH)
    ap.add_argument("--json", type=Path, default=None, help="write the per-song values here")
    args = ap.parse_args(argv)

    pairs = song_pairs(args.pop909, args.structure)[: args.limit]
    t0 = time.time()
    values, not_aligned, failed, undefined = {}, [], {}, []
    for song, midi, ann_dir in pairs:
        try:
            ok, v = song_share(midi, ann_dir, args.melody, args.threshold)
        except InputError as e:
            failed[song] = str(e)
            continue
        if not ok:
            not_aligned.append(song)
        elif math.isnan(v):
            undefined.append(song)
        else:
            values[song] = v
    v = np.array(list(values.values()))
    print(f"songs: {len(pairs)}, aligned well: {len(values) + len(undefined)}, with a value: {len(v)}, "
          f"not aligned: {len(not_aligned)}, unreadable: {len(failed)}  ({time.time() - t0:.0f} s)")
    if not_aligned:
        print("not aligned (left out):", " ".join(not_aligned))
    for song, why in failed.items():
        print(f"unreadable {song}: {why}")
    if len(v):
        print(f"chord-tone share of melody notes on strong beats ({args.melody} melody): "
              f"{v.mean():.3f} +- {v.std():.3f} (median {np.median(v):.3f}, min {v.min():.3f}, max {v.max():.3f}, "
              f"{len(v)} songs)")
    if args.json:
        args.json.write_text(json.dumps({"values": values, "not_aligned": not_aligned, "failed": failed,
                                         "undefined": undefined}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
