"""What the song-level tests (melody, chords) share: the POP909 sample built with its structure
annotations, batches through the training transform, a tiny seeded model, and the runs that
check a level learns (twenty steps in-process; train_accelerate.py in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.data import build_dataset, collate, make_train_transform
from fractalmidi.modeling_fractalmidi import FractalMIDIModel
from fractalmidi.training import batch_to_tensors

ROOT = Path(__file__).resolve().parents[1]
SONGS_TINY = ROOT / "hub_configs" / "songs_tiny.json"
DATA = ROOT / "tests" / "data"


def build_song_dataset(out, **kwargs):
    """The POP909 sample with its structure annotations (001-267 aligned, 580 not)."""
    ds, _ = build_dataset(DATA / "pop909", out, structure_dir=DATA / "pop909-structure", progress=False, **kwargs)
    return ds


def make_batch(rows, indices, seed=0, num_bars=4, max_shift=5):
    """A collated training batch of `rows[indices]` (random crop and transposition, seeded)."""
    t = make_train_transform(num_bars, max_shift, seed)
    out = t({k: [rows[i][k] for i in indices] for k in rows[0]})
    return collate([{k: v[i] for k, v in out.items()} for i in range(len(indices))])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return FractalMIDIModel(FractalMIDIConfig.from_json_file(SONGS_TINY))


def level_loss(model, batch, name, seed=0):
    torch.manual_seed(seed)
    return model(**batch_to_tensors(batch)).losses[name]


def twenty_steps(rows, indices, name):
    """`name`'s loss on a fixed batch before and after 20 AdamW steps of a tiny model."""
    model = tiny_model(seed=0)
    fixed = make_batch(rows, indices, seed=11)

    def held_out():
        model.eval()
        with torch.no_grad():
            value = float(np.mean([level_loss(model, fixed, name, seed=s).item() for s in range(4)]))
        model.train()
        return value

    before = held_out()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(20):
        out = model(**batch_to_tensors(make_batch(rows, indices, seed=step)))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = held_out()
    print(f"{name} loss {before:.3f} -> {after:.3f}")
    return before, after


def train_songs_tiny(dataset, out, *args) -> list[dict]:
    """train_accelerate.py with songs_tiny.json on `dataset` into `out` (extra `args`); its log."""
    cmd = [sys.executable, str(ROOT / "train_accelerate.py"), "--config", str(SONGS_TINY), "--dataset",
           str(dataset), "--output_dir", str(out), "--batch_size", "2", "--warmup_steps", "1",
           "--log_with", "none", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in (Path(out) / "training_log.jsonl").read_text().splitlines()]
