"""The autoregressive baseline: transformers' `LlamaForCausalLM` over miditok's REMI tokens.

What FractalMIDI is compared with, on speed (`python -m benchmarks.bench`) and on music
(`scripts/evaluate_model.py --compare`). Nothing here is a model of ours: the network, its KV
cache and its sampling are transformers' (`LlamaForCausalLM`, `generate`), the tokenisation is
miditok's REMI. What is ours is the glue:

- `remi_tokenizer()`: REMI with settings that round-trip our grid exactly (16th-note
  positions, durations on the same grid up to 64 quarter notes, all 127 velocities, time
  signatures; no tempo tokens: the grid's content does not depend on tempo). `piece_to_ids`
  and `ids_to_piece` go from a `Piece` to token ids and back (through symusic's `Score`);
  `tests/test_baseline.py` checks the round trip on real POP909 songs note for note.
- `ar_config_matching`: a `LlamaConfig` sized to FractalMIDI's parameter count (within 5%).
- `ARTrainWindows`, `ARValidationWindows`, `collate_tokens`: the training data, random windows of
  `num_bars` bars of the same dataset rows FractalMIDI trains on, transposed the same way, drawn
  from (seed, epoch, song) alone as `fractalmidi.training.TrainWindows` draws them, so
  `train_accelerate.py` trains and resumes the baseline with the same loop (a config whose
  `model_type` is "llama" selects it).
- `generate_bars`: sampled bars from transformers' `generate` (temperature and top-p, a static
  or dynamic cache), stopped per sequence once it has made the bars asked for (counting its
  `Bar` tokens: the model decides how many tokens a bar takes), decoded to `Piece`s.
- `load_baseline` / `save_baseline`: the model folder (config.json, model.safetensors,
  generation_config.json) with the tokenizer's own JSON beside it (`tokenizer.json`).

A REMI bar (4/4, two onsets, three notes):

    Bar TimeSig_4/4 Position_0 Pitch_60 Velocity_90 Duration_1.0.4 Pitch_64 Velocity_90 Duration_1.0.4
                    Position_8 Pitch_67 Velocity_90 Duration_2.0.4
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fractalmidi.data import augment_transpose, crop, random_crop, row_to_piece
from fractalmidi.errors import InputError
from fractalmidi.midi_io import piece_to_score, read_score
from fractalmidi.piece import PIANO_RANGE, Piece
from fractalmidi.training import validation_window_list

TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENS_PER_BAR = 512  # a bound on what one generated bar may take before generation stops
MAX_GENERATED_TOKENS = 262_144  # every generation's token bound, whatever the bars asked


# ============================================================================ tokenizer
def remi_tokenizer(steps_per_beat: int = 4, pitch_range: tuple[int, int] = PIANO_RANGE):
    """miditok's REMI, set up to round-trip a `Piece` on a grid of `steps_per_beat` steps per
    quarter note exactly: positions and durations in steps (durations up to 64 quarter notes),
    all velocities 1-127, time signatures, the piano's pitches; PAD, BOS and EOS."""
    from miditok import REMI, TokenizerConfig

    config = TokenizerConfig(
        pitch_range=(pitch_range[0], pitch_range[1] + 1),  # miditok's range is half-open
        beat_res={(0, 16): steps_per_beat, (16, 64): steps_per_beat},
        num_velocities=127,
        use_time_signatures=True,
        use_tempos=False,
        use_chords=False,
        use_rests=False,
        use_programs=False,
        special_tokens=["PAD", "BOS", "EOS"],
    )
    return REMI(config)


def load_tokenizer(folder):
    """The REMI tokenizer saved beside a baseline model (`tokenizer.json`, plain JSON)."""
    from miditok import REMI

    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise InputError(f"{folder}: no {TOKENIZER_FILE} (a baseline model folder holds its tokenizer)")
    return REMI(params=path)


def special_ids(tokenizer) -> dict[str, int]:
    return {name: tokenizer.vocab[f"{name}_None"] for name in ("PAD", "BOS", "EOS", "Bar")}


def piece_to_ids(tokenizer, piece: Piece) -> list[int]:
    """REMI ids of a `Piece` (its notes merged into one track), without BOS."""
    if len(piece.notes) == 0:  # REMI writes nothing for a score without notes
        return [special_ids(tokenizer)["Bar"]] * piece.num_bars
    seq = tokenizer.encode(piece_to_score(piece))
    seq = seq[0] if isinstance(seq, list) else seq
    return list(seq.ids)


def ids_to_piece(tokenizer, ids, num_bars: int | None = None, steps_per_beat: int = 4) -> Piece:
    """The `Piece` of REMI ids (special tokens dropped). With `num_bars`, exactly that many bars:
    a bar after the last note that REMI's decoder leaves out is added back (in the metre of the
    last bar), bars beyond are cut off."""
    special = set(special_ids(tokenizer).values()) - {special_ids(tokenizer)["Bar"]}
    ids = [int(i) for i in ids if int(i) not in special]
    score = tokenizer.decode([ids]) if ids else None
    if score is not None and score.note_num() > 0:
        piece, _ = read_score(score, steps_per_beat=steps_per_beat, name="baseline tokens")
    else:
        piece = Piece.from_bars([(4, 4)] * max(1, num_bars or 1), steps_per_beat=steps_per_beat)
    if num_bars is None or piece.num_bars == num_bars:
        return piece
    if piece.num_bars > num_bars:
        return piece.crop_bars(0, num_bars)
    extra = num_bars - piece.num_bars
    sig = tuple(int(x) for x in piece.time_signatures[-1])
    length = int(piece.bar_lengths[-1])
    bar_starts = np.concatenate([piece.bar_starts, piece.bar_starts[-1] + length * np.arange(1, extra + 1)])
    sigs = np.concatenate([piece.time_signatures, np.array([sig] * extra)])
    return Piece(piece.notes, bar_starts, sigs, piece.tempo_steps, piece.tempo_bpm, piece.steps_per_beat,
                 piece.pitch_range)


def tokens_per_bar(tokenizer, pieces) -> dict:
    """REMI tokens per bar of real music: mean, median and count of bars."""
    per_piece = [(len(piece_to_ids(tokenizer, p)), p.num_bars) for p in pieces]
    tokens = sum(t for t, _ in per_piece)
    bars = sum(b for _, b in per_piece)
    ratios = [t / b for t, b in per_piece if b]
    return {"mean": tokens / max(1, bars), "median": float(np.median(ratios)) if ratios else 0.0, "bars": bars}


# ============================================================================ model
def count_parameters(model_or_config) -> int:
    """Parameters of a model, or of the `LlamaForCausalLM` a config would build (built on the
    meta device: no memory)."""
    if isinstance(model_or_config, torch.nn.Module):
        return sum(p.numel() for p in model_or_config.parameters())
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(model_or_config).parameters())


def ar_config_matching(target_parameters: int, tokenizer=None, hidden_size: int = 256, num_layers: int = 10,
                       head_dim: int = 64, max_positions: int = 32768, tolerance: float = 0.05):
    """A `LlamaConfig` for the REMI vocabulary with `target_parameters` parameters (within
    `tolerance`): `hidden_size` and `num_layers` fixed, the MLP width (a multiple of 32) chosen
    to match. Untied input and output embeddings, full multi-head attention, RoPE positions up
    to `max_positions` tokens (256 bars of dense music take about 20,000)."""
    from transformers import LlamaConfig

    tokenizer = tokenizer or remi_tokenizer()
    ids = special_ids(tokenizer)
    vocab = len(tokenizer)
    fixed = 2 * vocab * hidden_size + hidden_size + num_layers * (4 * hidden_size * hidden_size + 2 * hidden_size)
    width = max(32, int(round((target_parameters - fixed) / (3 * hidden_size * num_layers) / 32)) * 32)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=width,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // head_dim,
        num_key_value_heads=hidden_size // head_dim,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=ids["PAD"],
        bos_token_id=ids["BOS"],
        eos_token_id=ids["EOS"],
    )
    n = count_parameters(config)
    if abs(n - target_parameters) > tolerance * target_parameters:
        raise ValueError(f"no MLP width gives {target_parameters:,} parameters within {tolerance:.0%} "
                         f"at hidden size {hidden_size} and {num_layers} layers (nearest {n:,})")
    return config


def default_generation_config(config, temperature: float = 0.8, top_p: float = 0.95):
    """Sampling as FractalMIDI's defaults: temperature and top-p, nothing else (no top-k, no
    repetition penalty); BOS, EOS and PAD never sampled."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        suppress_tokens=[config.pad_token_id, config.bos_token_id, config.eos_token_id],
    )


def load_baseline(folder, device: str = "cpu", dtype=torch.float32):
    """(model, tokenizer) of a saved baseline folder: `LlamaForCausalLM.from_pretrained`
    (safetensors only) and its REMI tokenizer."""
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise InputError(f"{folder}: not a baseline model folder (config.json and model.safetensors)")
    model = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True).to(device).eval()
    return model, load_tokenizer(folder)


def save_tokenizer(tokenizer, folder) -> Path:
    path = Path(folder) / TOKENIZER_FILE
    tokenizer.save(path)
    return path


# ============================================================================ data
class ARTrainWindows(torch.utils.data.Dataset):
    """Training examples for key `(epoch, index)` (from `fractalmidi.training.EpochSampler`): a
    random window of `num_bars` bars of song `index`, transposed by up to `max_shift`
    semitones (as FractalMIDI's windows), as BOS + REMI ids, cut at `max_tokens`. The random
    numbers come from (seed, epoch, index) alone."""

    def __init__(self, rows, num_bars: int, max_shift: int, seed: int, tokenizer=None, max_tokens: int = 3072):
        self.rows = rows
        self.num_bars = num_bars
        self.max_shift = max_shift
        self.seed = seed
        self.tokenizer = tokenizer or remi_tokenizer()
        self.max_tokens = max_tokens
        self.bos = special_ids(self.tokenizer)["BOS"]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> list[int]:
        epoch, index = key
        generator = np.random.default_rng([self.seed, epoch, index])
        window, _ = random_crop(self.rows[index], self.num_bars, generator)
        window, _ = augment_transpose(window, self.max_shift, generator=generator)
        return ([self.bos] + piece_to_ids(self.tokenizer, window))[: self.max_tokens]


class ARValidationWindows(torch.utils.data.Dataset):
    """The validation examples, the same at every evaluation: every non-overlapping window of
    `num_bars` bars of every song (at most `max_windows`, evenly spaced), untransposed."""

    def __init__(self, rows, num_bars: int, max_windows: int | None = None, tokenizer=None, max_tokens: int = 3072):
        self.rows = rows
        self.num_bars = num_bars
        self.tokenizer = tokenizer or remi_tokenizer()
        self.max_tokens = max_tokens
        self.bos = special_ids(self.tokenizer)["BOS"]
        self.windows = validation_window_list(rows, num_bars, max_windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> list[int]:
        index, first = self.windows[i]
        window = crop(row_to_piece(self.rows[index]), first, self.num_bars)
        return ([self.bos] + piece_to_ids(self.tokenizer, window))[: self.max_tokens]


def collate_tokens(examples: list[list[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids` and `labels` (-100 on padding: no loss). No attention mask: with
    the padding on the right, causal attention never lets a real token see a pad, so the loss is
    the same without one, and sdpa's causal path without a mask is twice as fast on a CPU."""
    length = max(len(e) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    for k, e in enumerate(examples):
        ids[k, : len(e)] = torch.tensor(e, dtype=torch.long)
        labels[k, : len(e)] = ids[k, : len(e)]
    return {"input_ids": ids, "labels": labels}


# ============================================================================ generation
class BarsMade:
    """transformers `StoppingCriteria`: a sequence is done once it has begun bar
    `num_bars + 1` (its `num_bars + 1`-th `Bar` token), or reached its token bound."""

    def __init__(self, bar_id: int, num_bars: int, prompt_length: int, max_tokens: int):
        self.bar_id = bar_id
        self.num_bars = num_bars
        self.prompt_length = prompt_length
        self.max_tokens = max_tokens

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        made = input_ids[:, self.prompt_length:]
        bars = (made == self.bar_id).sum(1)
        return (bars > self.num_bars) | (torch.full_like(bars, made.shape[1]) >= self.max_tokens)


@dataclass
class ARGeneration:
    pieces: list          # one Piece per sequence, exactly num_bars bars
    tokens: list          # tokens sampled per sequence (up to the bar after the last one asked)
    bars_made: list       # bars each sequence began within its token bound
    seconds: float        # wall-clock time of `generate`
    passes: int           # sequential forward passes: one per token of the longest sequence

    @property
    def tokens_per_bar(self) -> float:
        return float(np.mean([t / max(1, min(b, self.num_bars)) for t, b in zip(self.tokens, self.bars_made)]))

    @property
    def num_bars(self) -> int:
        return self.pieces[0].num_bars if self.pieces else 0


def generate_bars(model, tokenizer, num_bars: int, batch_size: int = 1, seed: int = 0,
                  generation_config=None, cache_implementation: str | None = None,
                  max_tokens_per_bar: int = MAX_TOKENS_PER_BAR, stopping_criteria=()) -> ARGeneration:
    """`batch_size` pieces of `num_bars` bars sampled by `model.generate` from BOS alone, each
    stopped when it starts bar `num_bars + 1`. `cache_implementation`: None (transformers'
    dynamic cache) or "static" (preallocated for the token bound). Seeded with `seed`.
    `stopping_criteria`: more transformers stopping criteria (e.g. the bench's warm-up's)."""
    from transformers import StoppingCriteriaList

    if not 1 <= num_bars <= 1024:
        raise InputError(f"num_bars must be 1-1024, got {num_bars}")
    if not 1 <= batch_size <= 256:
        raise InputError(f"batch_size must be 1-256, got {batch_size}")
    ids = special_ids(tokenizer)
    budget = min(MAX_GENERATED_TOKENS, (num_bars + 1) * max_tokens_per_bar)
    budget = min(budget, model.config.max_position_embeddings - 1)
    config = copy.deepcopy(generation_config or model.generation_config)
    config.max_new_tokens = budget
    if cache_implementation:
        config.cache_implementation = cache_implementation
    device = next(model.parameters()).device
    prompt = torch.full((batch_size, 1), ids["BOS"], dtype=torch.long, device=device)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config,
            stopping_criteria=StoppingCriteriaList([BarsMade(ids["Bar"], num_bars, 1, budget), *stopping_criteria]),
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    pieces, tokens, bars = [], [], []
    for row in out[:, 1:].tolist():
        row = [t for t in row if t != ids["PAD"]]
        starts = [k for k, t in enumerate(row) if t == ids["Bar"]]
        made = row[: starts[num_bars]] if len(starts) > num_bars else row
        tokens.append(len(made) + (1 if len(starts) > num_bars else 0))
        bars.append(min(len(starts), num_bars))
        pieces.append(ids_to_piece(tokenizer, made, num_bars))
    return ARGeneration(pieces, tokens, bars, seconds, out.shape[1] - 1)


# ============================================================================ model card
def ar_model_card(*, num_parameters: int, config, tokenizer, dataset: str,
                  train_songs: int, validation_songs: int, steps: int, seconds: float, tokens: int,
                  train_loss: float | None, eval_loss: float | None, hyperparameters: dict, command: str,
                  fractalmidi_parameters: int | None = None, validation_windows: int | None = None,
                  max_steps: int | None = None, max_train_seconds: float | None = None) -> str:
    """README.md of a trained baseline folder. `max_steps` (the schedule) and `max_train_seconds`
    (the time budget, None for none) say what ended the run."""
    hp = "\n".join(f"| {k} | {v} |" for k, v in hyperparameters.items())
    ratio = f" ({num_parameters / fractalmidi_parameters:.3f}x FractalMIDI's {fractalmidi_parameters:,})" \
        if fractalmidi_parameters else ""
    fmt = lambda x: "not measured" if x is None else f"{x:.4f}"
    bars = hyperparameters.get("num_bars")
    budget_note = ""
    if max_train_seconds:
        budget_note = (f" Its time budget was {max_train_seconds:g} s (`--max_train_seconds`): "
                       + (f"the schedule of {max_steps} steps ended first, at {seconds / max_train_seconds:.0%} of it."
                          if seconds < max_train_seconds else "it stopped there."))
    windows = (f"every {bars}-bar window of the validation songs" if validation_windows is None else
               f"{validation_windows} {bars}-bar windows of the validation songs, evenly spaced")
    return f"""---
license: mit
library_name: transformers
tags:
- music-generation
- symbolic-music
- midi
- piano
- baseline
---

# FractalMIDI's autoregressive baseline ({num_parameters / 1e6:.2f}M parameters)

transformers' `LlamaForCausalLM` ({config.num_hidden_layers} layers, hidden size {config.hidden_size},
MLP {config.intermediate_size}, {config.num_attention_heads} heads, RoPE), {num_parameters:,} parameters{ratio},
over miditok's REMI tokens ({len(tokenizer)} in the vocabulary, `tokenizer.json`; settings in
`benchmarks/baseline.py: remi_tokenizer`, which round-trip the 16th-note grid exactly). It is the
model FractalMIDI is compared with on speed and music in the FractalMIDI repository: the same data,
the same split, the same training loop and the same wall-clock budget on the same machine.

```python
from benchmarks.baseline import generate_bars, load_baseline  # from the FractalMIDI repository root
model, tokenizer = load_baseline("checkpoints/ar-baseline-pop909")
pieces = generate_bars(model, tokenizer, num_bars=8, seed=0).pieces
```

## Training data

`{dataset}`: {train_songs} training songs, {validation_songs} validation songs (FractalMIDI's split).
Each example is a random window of {hyperparameters.get("num_bars")} bars of a song, transposed
by up to {hyperparameters.get("max_shift")} semitones, all tracks merged into one, as BOS and its
REMI tokens (cut at {hyperparameters.get("max_tokens")} tokens).

## Training

{steps} optimizer steps, {seconds / 3600:.2f} hours ({seconds:.0f} s) of training, {tokens:,} tokens seen.{budget_note}

| setting | value |
|---|---|
{hp}

## Losses at the end

| loss | value |
|---|---|
| training (next token, last logging window) | {fmt(train_loss)} |
| validation ({windows}) | {fmt(eval_loss)} |

## Reproduce

```bash
{command}
```
"""
