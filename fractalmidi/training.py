"""Pieces of `train_accelerate.py` that tests (and other scripts) can use alone.

- `lr_factor`, `structure_weight_at`: the two schedules, plain functions of the optimizer step.
- `EpochSampler`, `TrainWindows`, `ValidationWindows`, `collate_tensors`, `batch_to_tensors`:
  data for the model. Every random choice is a function of (seed, epoch, song), never of how
  many examples were read before, so a resumed run sees exactly the data the first run would
  have seen, whatever the number of processes, DataLoader workers or skipped batches.
- `TrainingState`: the loop's own counters, saved with the checkpoints as JSON.
- `save_state_file`, `load_state_file`, `save_model_file`, `load_model_file`, `rng_state`,
  `set_rng_state`: the checkpoint files, safetensors and JSON only. No pickle is ever written
  or read, so a checkpoint folder from elsewhere cannot run code on `--resume`.
- `list_checkpoints`, `latest_checkpoint`, `replace_dir`, `truncate_log`: checkpoint folders
  and the jsonl log, never left half-written (a log line cut off by a kill is dropped).
- `model_card`: README.md of a trained model folder.

Nothing here imports accelerate: the script owns the distributed side.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model

from .data import TrainTransform, annotation_targets, collate, crop, dense_example, row_to_piece, window_starts

CHECKPOINT_RE = re.compile(r"step_(\d+)")


# ----------------------------------------------------------------------------- schedules
def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based: the step about
    to be taken). Linear warmup over `warmup_steps` ((step + 1) / warmup_steps, so the first
    step is not wasted at lr 0), then half a cosine from 1 down to `min_lr_ratio`, reached at
    `max_steps`; it stays there after."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def structure_weight_at(step: int, warmup_steps: int = 5000, ramp_steps: int = 1000) -> float:
    """Weight of the structure loss at optimizer step `step` (0-based), the seed's two-stage
    warmup: 0 for the first `warmup_steps` steps (the note levels learn first, conditioned on
    true structure), then rising linearly by 1 / `ramp_steps` a step to 1, reached at step
    `warmup_steps + ramp_steps - 1` (at once when `ramp_steps` is 0)."""
    if step < warmup_steps:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - warmup_steps + 1) / ramp_steps)


# ----------------------------------------------------------------------------- data
def batch_to_tensors(batch: dict) -> dict[str, torch.Tensor]:
    """A `fractalmidi.data.collate` batch as the model's keyword arguments: numpy arrays become
    torch tensors (sharing memory, dtypes kept: roll stays uint8), list-valued keys (song_id,
    first_bar, shift) are dropped."""
    return {k: torch.from_numpy(v) for k, v in batch.items() if isinstance(v, np.ndarray)}


def collate_tensors(examples: list[dict]) -> dict[str, torch.Tensor]:
    """`collate` then `batch_to_tensors`: the DataLoader's collate_fn (a module-level function,
    so worker processes can pickle it)."""
    return batch_to_tensors(collate(examples))


class EpochSampler(torch.utils.data.Sampler):
    """The order of songs in each epoch, a permutation drawn from (seed, epoch) alone: the same
    on every process and after a restart. Yields keys `(epoch, index)` for `TrainWindows`, so
    the example drawn for a song depends on the epoch too. Set the epoch with `set_epoch`
    before iterating (accelerate's `DataLoaderShard.set_epoch` calls it)."""

    def __init__(self, num_rows: int, seed: int):
        self.num_rows = num_rows
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_rows)
        return iter([(self.epoch, int(i)) for i in order])

    def __len__(self) -> int:
        return self.num_rows


class TrainWindows(torch.utils.data.Dataset):
    """Training examples: for a key `(epoch, index)` (from `EpochSampler`), a random window of
    `num_bars` bars of song `index`, transposed by up to `max_shift` semitones, as
    `fractalmidi.data.make_train_transform` makes them (a `TrainTransform` is reused here), its
    generator reseeded from (seed, epoch, index) for every example."""

    def __init__(self, rows, num_bars: int, max_shift: int, seed: int):
        self.rows = rows  # a datasets.Dataset built by `fractalmidi build-dataset`
        self.seed = seed
        self.transform = TrainTransform(num_bars, max_shift, seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        epoch, index = key
        self.transform.generator = np.random.default_rng([self.seed, epoch, index])
        out = self.transform({k: [v] for k, v in self.rows[index].items()})
        return {k: v[0] for k, v in out.items()}


def validation_window_list(rows, num_bars: int, max_windows: int | None = None) -> list[tuple[int, int]]:
    """(song index, first bar) of the non-overlapping windows of `num_bars` bars of every song
    (`window_starts`); at most `max_windows`, taken evenly spaced over that list when there are
    more. The validation windows of FractalMIDI and of the autoregressive baseline."""
    bars = rows["bar_starts"]
    windows = [(i, s) for i in range(len(rows)) for s in window_starts({"bar_starts": bars[i]}, num_bars)]
    if max_windows is not None and len(windows) > max_windows:
        keep = np.linspace(0, len(windows) - 1, max_windows).round().astype(int)
        windows = [windows[k] for k in keep]
    return windows


class ValidationWindows(torch.utils.data.Dataset):
    """Validation examples, the same at every evaluation: the non-overlapping windows of
    `num_bars` bars of every song (`window_starts`), untransposed; at most `max_windows`, taken
    evenly spaced over that list when there are more. With the structure annotations each
    window carries the melody and chord targets as the training windows do
    (`data.annotation_targets`, untransposed)."""

    def __init__(self, rows, num_bars: int, max_windows: int | None = None):
        self.rows = rows
        self.num_bars = num_bars
        self.windows = validation_window_list(rows, num_bars, max_windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        index, first = self.windows[i]
        row = self.rows[index]
        window = crop(row_to_piece(row), first, self.num_bars)
        return {**dense_example(window), **annotation_targets(row, first, window.num_steps, 0, window.num_bars)}


# ----------------------------------------------------------------------------- loop state
class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from; the message names the file and the
    problem in one line."""


class TrainingState:
    """What the loop itself must carry over a restart, saved in every checkpoint as JSON
    (`save` / `load`: plain numbers, nothing that can run code): optimizer steps done, training
    seconds and tokens so far, and the sums of the log window in progress (so a log line after
    a resume averages the same steps as it would have without one)."""

    def __init__(self):
        self.step = 0
        self.elapsed_seconds = 0.0
        self.tokens = 0
        self.window: dict[str, float] = {}  # loss name -> sum over the steps of this log window
        self.window_steps = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.window[k] = self.window.get(k, 0.0) + v
        self.window_steps += 1

    def take_window(self) -> dict[str, float]:
        """The window's means, and a fresh window."""
        means = {k: v / max(1, self.window_steps) for k, v in self.window.items()}
        self.window, self.window_steps = {}, 0
        return means

    def state_dict(self) -> dict:
        return {
            "step": self.step, "elapsed_seconds": self.elapsed_seconds, "tokens": self.tokens,
            "window": dict(self.window), "window_steps": self.window_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.elapsed_seconds = float(state["elapsed_seconds"])
        self.tokens = int(state["tokens"])
        self.window = {str(k): float(v) for k, v in state["window"].items()}
        self.window_steps = int(state["window_steps"])

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.state_dict(), indent=1) + "\n", encoding="utf-8")

    def load(self, path) -> None:
        """Read a file `save` wrote; `CheckpointError` if it is missing or not such a file."""
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            self.load_state_dict(state)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{path}: not a JSON file ({type(e).__name__}: {e})") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: not a training state ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- checkpoint files
# A state (an optimizer's or scheduler's state_dict, the random states) is one safetensors file:
# its tensors, and under the metadata key STATE_KEY the JSON of everything else, where a tensor
# is {"tensor": name}, a numpy array {"ndarray": [name, dtype]}, a tuple {"tuple": [...]} and a
# dict {"dict": [[key, value], ...]} (so int keys stay ints). Reading it builds numbers, strings,
# lists, tuples, dicts, tensors and numeric numpy arrays, nothing else: no code can run.
STATE_KEY = "fractalmidi_state"
STATE_FORMAT = 1


def _encode(obj, tensors: dict[str, torch.Tensor]):
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = obj.detach().cpu().contiguous()
        return {"tensor": name}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot save a numpy array of dtype {obj.dtype}")
        name = str(len(tensors))
        wide = np.float64 if obj.dtype.kind == "f" else np.int64
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj, dtype=wide))
        return {"ndarray": [name, obj.dtype.str]}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(x, tensors) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x, tensors) for x in obj]
    if isinstance(obj, dict):
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot save a {type(obj).__name__} in a checkpoint")


def _decode(obj, tensors: dict[str, torch.Tensor], where: str):
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_decode(x, tensors, where) for x in obj]
    if isinstance(obj, dict) and len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "tensor" and isinstance(value, str) and value in tensors:
            return tensors[value]
        if (
            tag == "ndarray" and isinstance(value, list) and len(value) == 2
            and isinstance(value[0], str) and value[0] in tensors and isinstance(value[1], str)
        ):
            try:
                dtype = np.dtype(value[1])
            except TypeError:
                dtype = None
            if dtype is not None and dtype.kind in "biuf":
                try:
                    return tensors[value[0]].numpy().astype(dtype)
                except (TypeError, ValueError, RuntimeError) as e:
                    raise CheckpointError(f"{where}: array {value[0]} ({e})") from None
        if tag == "tuple" and isinstance(value, list):
            return tuple(_decode(x, tensors, where) for x in value)
        if tag == "dict" and isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
            out = {}
            for k, v in value:
                k = _decode(k, tensors, where)
                if not isinstance(k, (str, int, float, bool, type(None))):
                    raise CheckpointError(f"{where}: a dict key that is a {type(k).__name__}")
                out[k] = _decode(v, tensors, where)
            return out
    raise CheckpointError(f"{where}: unexpected value {json.dumps(obj)[:80]}")


def normal_file_mode(path) -> None:
    """Give the file `path` the mode of any new file, 0666 less the umask (0644 under the usual
    022): safetensors creates its files 0600."""
    mask = os.umask(0o077)  # os.umask sets a mask and returns the one before: read it, put it back
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def save_state_file(obj, path) -> None:
    """Write `obj` (a state_dict: dicts, lists, tuples, numbers, strings, tensors, numeric numpy
    arrays) to the safetensors file `path`."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(obj, tensors)
    metadata = {STATE_KEY: json.dumps({"format": STATE_FORMAT, "state": structure})}
    save_file(tensors, str(path), metadata=metadata)
    normal_file_mode(path)


def load_state_file(path):
    """Read a file `save_state_file` wrote; `CheckpointError` (naming the file) if it is
    missing or anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    if STATE_KEY not in metadata:
        raise CheckpointError(f"{path}: a safetensors file without a saved state ({STATE_KEY} metadata)")
    try:
        saved = json.loads(metadata[STATE_KEY])
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: the saved state is not valid JSON ({e})") from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT or "state" not in saved:
        raise CheckpointError(f"{path}: not a saved state of format {STATE_FORMAT}")
    return _decode(saved["state"], tensors, str(path))


def save_model_file(model: torch.nn.Module, path) -> None:
    """The model's weights as safetensors (shared tensors once)."""
    save_model(model, str(path), metadata={"format": "pt"})
    normal_file_mode(path)


def load_model_file(model: torch.nn.Module, path) -> None:
    """Weights `save_model_file` wrote into `model` (every one of them, nothing else);
    `CheckpointError` if the file is missing, no safetensors file, or for another model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        load_model(model, str(path), strict=True, device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    except RuntimeError as e:  # missing, unexpected or misshapen weights
        raise CheckpointError(f"{path}: weights of another model ({' '.join(str(e).split())[:300]})") from None


def rng_state() -> dict:
    """This process's random states: python's, numpy's, torch's, and CUDA's where there is CUDA
    (what `set_seed` seeds)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, where: str = "random state") -> None:
    """Restore what `rng_state` returned; `CheckpointError` (naming `where`) if it is not that."""
    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{where}: not a random state ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- files
def list_checkpoints(checkpoint_dir) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, `step_N`, oldest first. Folders being
    written (`.step_N.tmp`) or deleted (`.step_N.old`) are not checkpoints."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.fullmatch(p.name))]
    return sorted(found)


def latest_checkpoint(checkpoint_dir) -> Path | None:
    found = list_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


def remove_dir(path: Path) -> None:
    """Delete a folder so that no half-deleted copy keeps a valid name: rename, then delete."""
    if not path.exists():
        return
    doomed = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final` (replacing one there): a reader sees the old
    folder or the new one, never a mix."""
    if final.exists():
        remove_dir(final)
    os.replace(tmp, final)


def append_jsonl(path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path, on_torn=None) -> list[dict]:
    """The records of a jsonl file (one JSON object a line; blank lines skipped). A last line
    with no newline that is not valid JSON was cut off by a kill while it was written: it is
    dropped, and `on_torn(message)` says so (default: `warnings.warn`). Any other line that is
    not a JSON object raises ValueError naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # the last line, and it has no newline: torn
                message = f"{path}: line {number} is incomplete (a run killed while writing it?), dropped"
                if on_torn is None:
                    warnings.warn(message, stacklevel=2)
                else:
                    on_torn(message)
                break
            raise ValueError(f"{path}: line {number} is not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def truncate_log(path, step: int, on_torn=None) -> None:
    """Keep the records of steps <= `step` (a resume from the checkpoint of that step will log
    the later ones again), written to a temporary file and renamed into place. A last line cut
    off by a kill is dropped (`read_jsonl`); a bad line elsewhere raises ValueError."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path, on_torn) if r.get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- model card
def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def model_card(
    *,
    config,
    num_parameters: int,
    dataset: str,
    train_songs: int,
    validation_songs: int,
    steps: int,
    seconds: float,
    tokens: int,
    train_losses: dict[str, float],
    eval_losses: dict[str, float],
    hyperparameters: dict,
    command: str,
) -> str:
    """README.md for a trained model folder (Hub model card: YAML metadata, then text): what it
    was trained on, for how long, how well, and the command that reproduces it."""
    levels = ", ".join(config.levels)
    hp = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in hyperparameters.items())

    def table(losses: dict[str, float]) -> str:
        if not losses:
            return "(not measured)"
        rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in losses.items())
        return f"| loss | value |\n|---|---|\n{rows}"

    hub_dataset = "" if Path(dataset).exists() else f"datasets:\n- {dataset}\n"
    return f"""---
license: mit
library_name: transformers
tags:
- fractalmidi
- music-generation
- symbolic-music
- midi
- piano
{hub_dataset}---

# FractalMIDI ({num_parameters / 1e6:.2f}M parameters)

A hierarchical masked-prediction model for piano MIDI: it generates a piece's structure (tempo
and note density per bar) first, then unfolds it level by level ({levels}) into notes and
velocities. See the FractalMIDI repository for the model and the `fractalmidi` command line.

```python
from transformers import AutoModel
# a Hub repo uploaded with `fractalmidi push` carries the model's code:
model = AutoModel.from_pretrained("hub-id", trust_remote_code=True)
# with the fractalmidi package installed (a local folder, or any Hub repo of this model):
import fractalmidi
model = AutoModel.from_pretrained("path/or/hub-id")
```

## Training data

`{dataset}`: {train_songs} training songs, {validation_songs} validation songs (a fixed split
by a hash of each song's id). Each training example is a random window of
{hyperparameters.get("num_bars")} bars of a song, transposed by a random shift of up to
{hyperparameters.get("max_shift")} semitones that keeps every note on the keyboard.

## Training

{steps} optimizer steps, {seconds / 3600:.2f} hours ({seconds:.0f} s) of training,
{tokens:,} grid steps (16th notes of music) seen.

| setting | value |
|---|---|
{hp}

The structure loss has weight 0 for the first {hyperparameters.get("structure_warmup_steps")} steps,
then ramps linearly to 1 over {hyperparameters.get("structure_ramp_steps")} steps (the note
levels learn first, conditioned on true structure).

## Losses at the end

Training (mean over the last logging window, with the structure weight of that time):

{table(train_losses)}

Validation (every non-overlapping window of the validation songs, structure weight 1):

{table(eval_losses)}

## Reproduce

```bash
{command}
```
"""
