"""Align POP909's structure annotations (form, chords, key, melody) with its MIDI files.

    python scripts/align_structure.py ../shared/data/pop909 ../shared/data/pop909-structure \
        --out outputs/structure_report.json [--num-proc 2]

For every song with both a MIDI folder and an annotation folder: the whole-beat shift that
best matches the annotated melody with the MIDI MELODY track, its match share, whether it
lands on a downbeat of beat_midi.txt; then a summary table, the songs that do not align well
(match < --threshold; they keep their notes, their labels and chords are masked), the songs
that could not be read (with the reason), and the chord vocabulary's coverage. The JSON
report is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fractalmidi.errors import InputError  # noqa: E402
from fractalmidi.files import atomic_path  # noqa: E402
from fractalmidi.structure import (  # noqa: E402
    GOOD_MATCH,
    QUALITIES,
    align_song,
    chord_coverage,
    read_annotations,
    song_pairs,
)


def _one(args):
    song, midi, ann_dir, threshold = args
    try:
        a = align_song(midi, ann_dir, threshold=threshold)
        cov = chord_coverage([read_annotations(ann_dir)])
        return {"ok": True, **a.summary(), "coverage": cov}
    except InputError as e:
        return {"ok": False, "song": song, "error": str(e)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pop909_dir")
    ap.add_argument("structure_dir")
    ap.add_argument("--out", default=None, help="JSON report (written atomically)")
    ap.add_argument("--num-proc", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=GOOD_MATCH, help="match share to align well (default %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N songs (0: all)")
    args = ap.parse_args(argv)
    try:
        pairs = song_pairs(args.pop909_dir, args.structure_dir)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        pairs = pairs[: args.limit]
    if not pairs:
        print("error: no song has both a MIDI folder and an annotation folder", file=sys.stderr)
        return 2
    jobs = [(s, m, d, args.threshold) for s, m, d in pairs]
    t0 = time.time()
    if args.num_proc > 1:
        with Pool(args.num_proc) as pool:
            rows = pool.map(_one, jobs, chunksize=8)
    else:
        rows = [_one(j) for j in jobs]
    seconds = time.time() - t0

    ok = [r for r in rows if r["ok"]]
    failed = [r for r in rows if not r["ok"]]
    match = np.array([r["match"] for r in ok]) if ok else np.zeros(1)
    well = [r for r in ok if r["aligned_well"]]
    bad = sorted((r for r in ok if not r["aligned_well"]), key=lambda r: r["match"])
    total = sum(r["coverage"]["chord_beats"] for r in ok)
    inside = sum(r["coverage"]["in_vocabulary"] for r in ok)
    outside: dict[str, int] = {}
    for r in ok:
        for q, b in r["coverage"]["outside"].items():
            outside[q] = outside.get(q, 0) + b
    summary = {
        "songs": len(rows), "read": len(ok), "unreadable": len(failed), "aligned_well": len(well),
        "threshold": args.threshold, "match_mean": float(match.mean()), "match_median": float(np.median(match)),
        "match_worst": float(match.min()), "on_bar_line_share": float(np.mean([r["on_bar_line"] for r in ok])) if ok else 0.0,
        "on_bar_line_share_aligned_well": float(np.mean([r["on_bar_line"] for r in well])) if well else 0.0,
        "chord_beats": total, "chord_vocabulary_coverage": inside / total if total else 0.0,
        "qualities": list(QUALITIES), "outside_vocabulary": dict(sorted(outside.items(), key=lambda kv: -kv[1])),
        "seconds": round(seconds, 1), "num_proc": args.num_proc,
    }
    print("| songs | aligned well (match >= %.2f) | mean match | median | worst | shift on a bar line | chord vocabulary coverage |" % args.threshold)
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(rows)} | {len(well)} ({len(well) / len(rows):.1%}) | {summary['match_mean']:.3f} | "
        f"{summary['match_median']:.3f} | {summary['match_worst']:.3f} | {summary['on_bar_line_share']:.1%} | "
        f"{summary['chord_vocabulary_coverage']:.2%} of {total:,} chord beats |"
    )
    print(f"{seconds:.1f} s, {args.num_proc} process(es)")
    print(f"qualities outside the vocabulary (beats): {summary['outside_vocabulary']}")
    if bad:
        print(f"not aligned well ({len(bad)}; notes kept, labels and chords masked):")
        print("  " + ", ".join(f"{r['song']} ({r['match']:.2f}, shift {r['shift_beats']})" for r in bad))
    for r in failed:
        print(f"unreadable: {r['song']}: {r['error']}")
    if args.out:
        report = {"summary": summary, "not_aligned_well": [r["song"] for r in bad],
                  "unreadable": failed, "songs": [{k: v for k, v in r.items() if k != "coverage"} for r in rows]}
        with atomic_path(args.out, ".json") as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
