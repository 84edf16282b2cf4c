"""Fit the rhythm prior of a model (`rhythm_patterns` in its generation config) to the training
songs of a dataset: every 16-step (4/4) bar of the train split with at least one onset, as its
16-slot onset pattern (melody and accompaniment merged), clustered by k-means
(`sampling.fit_bar_patterns`). `generate` uses it with `rhythm_prior` > 0.

    python scripts/fit_rhythm_patterns.py data_cache/pop909-songs checkpoints/fractalmidi-pop909-songs \\
        [--clusters 16] [--seed 0]

The model folder's generation_config.json is rewritten through a temporary file (the other
fields kept, the file mode kept); nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fractalmidi.data import load_dataset_dir, row_to_piece  # noqa: E402
from fractalmidi.metrics import bar_onset_patterns  # noqa: E402
from fractalmidi.sampling import fit_bar_patterns  # noqa: E402


def write_json_atomically(path: Path, data: dict) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".generation_config.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="a dataset folder from `fractalmidi build-dataset` (its train split is read)")
    ap.add_argument("model", help="the model folder whose generation_config.json gets the prior")
    ap.add_argument("--clusters", type=int, default=16, help="k-means clusters, 2-256 (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 2 <= args.clusters <= 256:
        ap.error(f"--clusters must be 2-256, got {args.clusters}")
    config_path = Path(args.model) / "generation_config.json"
    if not config_path.is_file():
        ap.error(f"{config_path}: no generation_config.json in the model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))  # read first: a bad file fails before the work
    rows = load_dataset_dir(args.dataset, split="train")
    patterns = bar_onset_patterns(row_to_piece(row) for row in rows)
    if len(patterns) < args.clusters:
        ap.error(f"{args.dataset}: {len(patterns)} bars of 16 steps with an onset, fewer than --clusters {args.clusters}")
    prior = fit_bar_patterns(patterns, clusters=args.clusters, seed=args.seed)
    config["rhythm_patterns"] = prior
    write_json_atomically(config_path, config)
    print(f"{config_path}: rhythm_patterns from {len(patterns)} bars of {len(rows)} training songs, "
          f"{args.clusters} clusters (largest {max(prior['weights']):.3f} of the bars)")
    return prior


if __name__ == "__main__":
    main()
