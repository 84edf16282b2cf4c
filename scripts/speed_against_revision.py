"""Generation speed of this working tree against an earlier git revision, for refactors that
should not slow anything down: the shipped model generates the same lengths in both, in
alternating child processes (old, new, old, new ...) so that other load on the machine falls on
both alike, and a table of median seconds per length is printed.

    python scripts/speed_against_revision.py REV [--lengths 1024 4096] [--rounds 2] [--repeats 3]

The revision is checked out into a temporary git worktree (removed afterwards) and imported from
there; both sides use this environment's packages. Each child loads the model, warms up once,
then times `--repeats` generations per length (seeds 0, 1, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path("checkpoints") / "fractalmidi-pop909-songs"

CHILD = r"""
import json, sys, time, torch
import fractalmidi
from fractalmidi import FractalMIDIModel
model_dir, lengths, repeats, threads = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = FractalMIDIModel.from_pretrained(model_dir).eval()
model.generate(num_bars=4, seed=0)  # warm-up
out = {"package": fractalmidi.__file__, "seconds": {}, "passes": {}}
for steps in lengths:
    times = []
    for seed in range(repeats):
        t = time.perf_counter()
        result = model.generate(num_bars=steps // 16, seed=seed)
        times.append(time.perf_counter() - t)
    out["seconds"][steps], out["passes"][steps] = times, result.num_forward_passes
print(json.dumps(out))
"""


def run_child(tree: Path, lengths, repeats, threads) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))  # the tree's package before the installed one
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tree / MODEL), ",".join(map(str, lengths)), str(repeats),
                           str(threads)], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"speed_against_revision: the child in {tree} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["package"].startswith(str(tree)):
        sys.exit(f"speed_against_revision: {tree} imported {out['package']}, not its own package")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revision", help="the git revision to compare against (e.g. HEAD~3, a commit)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], help="grid steps (whole 4/4 bars)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of old and new (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed generations per length per round (default 3)")
    ap.add_argument("--threads", type=int, default=torch_threads(), help="torch threads (default: all cores)")
    args = ap.parse_args(argv)
    if any(s < 16 or s % 16 for s in args.lengths):
        ap.error("--lengths must be whole 4/4 bars: multiples of 16 steps")
    if not 1 <= args.rounds <= 10 or not 1 <= args.repeats <= 20:
        ap.error("--rounds 1-10, --repeats 1-20")
    with tempfile.TemporaryDirectory(prefix="fractalmidi_rev_") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.revision], check=True)
        try:
            times = {"old": {s: [] for s in args.lengths}, "new": {s: [] for s in args.lengths}}
            passes = {}
            for _ in range(args.rounds):
                for side, tree in (("old", old), ("new", ROOT)):
                    out = run_child(tree, args.lengths, args.repeats, args.threads)
                    for s in args.lengths:
                        times[side][s] += out["seconds"][str(s)]
                        passes[side, s] = out["passes"][str(s)]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    print(f"this tree against {args.revision}: shipped model, batch 1, {args.threads} threads, "
          f"median of {args.rounds} x {args.repeats} runs each, sides alternating")
    print(f"{'steps':>6} {'old s':>8} {'new s':>8} {'new/old':>8} {'passes old/new':>15}")
    for s in args.lengths:
        o, n = statistics.median(times["old"][s]), statistics.median(times["new"][s])
        print(f"{s:6d} {o:8.3f} {n:8.3f} {n / o:8.2f} {passes['old', s]:>7}/{passes['new', s]}")
    return 0


def torch_threads() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
