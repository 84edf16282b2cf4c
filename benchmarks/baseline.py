"""An honest autoregressive baseline: a decoder-only causal transformer over note-event tokens.

What FractalMIDI's speed is measured against (`python -m benchmarks.bench`). Unlike the seed's "AR
baseline" (the bidirectional note level run L times, untrained, no sampling) this is what an
autoregressive music model really is:

- a REMI-like tokenizer of our own (`NoteEventTokenizer`): per bar `Bar`, a `TimeSig` and a
  `Tempo` token where they change, then for every onset position `Position` followed by
  `Pitch, Velocity, Duration` per note; `encode(Piece) -> ids`, `decode(ids) -> Piece`;
- a causal transformer (`ARBaselineModel`, a transformers `PreTrainedModel` with its own
  `ARBaselineConfig`, model_type "fractalmidi_ar"): rotary positions, pre-norm blocks,
  attention through transformers' attention interface (eager / sdpa / flash_attention_2), a
  causal mask (optionally a sliding window, `attention_window`);
- `generate` with a real KV cache (per-layer key / value tensors, preallocated, one token fed per
  step) and sampling at every token (temperature, a seeded `torch.Generator`), stopping after
  the requested number of bars (counting `Bar` tokens), at `EOS`, or at a token limit; or, for
  timing an untrained model, producing exactly `num_tokens` tokens;
- training: `forward(input_ids, attention_mask, labels)` returns the next-token loss;
  `ARTokenWindows` / `collate_tokens` / `token_batches` make batches of random N-bar windows of
  the same dataset rows FractalMIDI trains on; `train_ar` is a plain loop over them;
- `ar_config_matching(fractalmidi_model_or_config)` sizes the baseline to the parameter count of
  the FractalMIDI model it is compared with.

Tokens of a bar (4/4, two onsets, three notes):

    Bar TimeSig_4/4 Tempo_23 Position_0 Pitch_60 Velocity_9 Duration_4 Pitch_64 Velocity_9 Duration_4
                             Position_8 Pitch_67 Velocity_10 Duration_8

`TimeSig` and `Tempo` appear on the first bar and then only where they change. Durations are
capped at `max_duration` steps; velocities and tempi are classes (the same classes as
FractalMIDI's, `tokens_fractalmidi`), so a round trip keeps pitch, onset, bars and time
signatures exactly, durations up to the cap, and velocity and tempo to their class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from fractalmidi.modeling_fractalmidi import eager_attention_forward
from fractalmidi.piece import Piece, normalize_notes
from fractalmidi.tokens_fractalmidi import class_to_tempo, class_to_velocity, tempo_to_class, velocity_to_class

PAD, BOS, EOS, BAR = 0, 1, 2, 3
SPECIAL = ("PAD", "BOS", "EOS", "Bar")


# ============================================================================ configuration
class ARBaselineConfig(PreTrainedConfig):
    r"""Configuration of an [`ARBaselineModel`] and of its tokenizer.

    Args:
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the transformer.
        num_layers (`int`, *optional*, defaults to 6):
            Number of transformer blocks.
        num_heads (`int`, *optional*, defaults to 4):
            Attention heads per block (hidden_size must divide by it; the head size must be even).
        mlp_ratio (`int`, *optional*, defaults to 4):
            MLP width / hidden_size.
        attention_window (`int`, *optional*, defaults to 0):
            0: full causal attention (every token sees all before it). N > 0: each token sees the
            N tokens up to itself (sliding window, as Mistral), so a step costs O(N), not O(length).
        max_position_embeddings (`int`, *optional*, defaults to 65536):
            Longest sequence `generate` will make (rotary positions have no table; this is a cap).
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary position frequencies.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the residual branches (training).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention weights (training).
        rms_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the RMS norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initial weights.
        steps_per_beat (`int`, *optional*, defaults to 4):
            Grid steps per quarter note (as `FractalMIDIConfig`).
        max_bar_len (`int`, *optional*, defaults to 48):
            Longest bar in steps: the number of `Position` tokens.
        pitch_low (`int`, *optional*, defaults to 21):
            Lowest pitch with a `Pitch` token.
        pitch_high (`int`, *optional*, defaults to 108):
            Highest pitch with a `Pitch` token (88 keys by default).
        velocity_bins (`int`, *optional*, defaults to 16):
            Number of `Velocity` tokens (equal-width classes of 1-127, as FractalMIDI's).
        max_duration (`int`, *optional*, defaults to 64):
            Number of `Duration` tokens: 1 .. max_duration steps; longer notes are cut to it.
        tempo_bins (`int`, *optional*, defaults to 48):
            Number of `Tempo` tokens (log-spaced classes between tempo_min and tempo_max, as FractalMIDI's).
        tempo_min (`float`, *optional*, defaults to 30.0):
            Lowest tempo class centre, BPM.
        tempo_max (`float`, *optional*, defaults to 240.0):
            Highest tempo class centre, BPM.
        time_signature_denominators (`list[int]`, *optional*, defaults to `[2, 4, 8]`):
            One `TimeSig` token for every n/d with d in this list whose bar fits max_bar_len.
    """

    model_type = "fractalmidi_ar"

    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    mlp_ratio: int = 4
    attention_window: int = 0
    max_position_embeddings: int = 65536
    rope_theta: float = 10000.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    # the tokenizer
    steps_per_beat: int = 4
    max_bar_len: int = 48
    pitch_low: int = 21
    pitch_high: int = 108
    velocity_bins: int = 16
    max_duration: int = 64
    tempo_bins: int = 48
    tempo_min: float = 30.0
    tempo_max: float = 240.0
    time_signature_denominators: list[int] | tuple[int, ...] = (2, 4, 8)

    def __post_init__(self, **kwargs):
        self.time_signature_denominators = [int(d) for d in self.time_signature_denominators]
        super().__post_init__(**kwargs)
        for name in ("hidden_size", "num_layers", "num_heads", "mlp_ratio", "max_bar_len", "velocity_bins",
                     "max_duration", "tempo_bins", "max_position_embeddings"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ARBaselineConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(
                f"ARBaselineConfig: hidden_size {self.hidden_size} must split into {self.num_heads} heads of even size"
            )
        if self.attention_window < 0:
            raise ValueError(f"ARBaselineConfig: attention_window must be >= 0, got {self.attention_window}")

    @property
    def vocab_size(self) -> int:
        return NoteEventTokenizer(self).vocab_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# ============================================================================ tokenizer
class NoteEventTokenizer:
    """REMI-like note-event tokens (see the module docstring), built from an `ARBaselineConfig`
    (or any object with its tokenizer fields). Token kinds, in id order: PAD, BOS, EOS, Bar,
    TimeSig, Tempo, Position, Pitch, Velocity, Duration."""

    KINDS = ("TimeSig", "Tempo", "Position", "Pitch", "Velocity", "Duration")

    def __init__(self, config):
        self.config = config
        self.steps_per_beat = int(config.steps_per_beat)
        self.pitch_low, self.pitch_high = int(config.pitch_low), int(config.pitch_high)
        self.max_duration = int(config.max_duration)
        self.time_signatures = [
            (n, d)
            for d in config.time_signature_denominators
            for n in range(1, 4 * config.max_bar_len + 1)
            if (n * 4 * self.steps_per_beat) % d == 0 and n * 4 * self.steps_per_beat // d <= config.max_bar_len
        ]
        self.sig_index = {s: i for i, s in enumerate(self.time_signatures)}
        sizes = {
            "TimeSig": len(self.time_signatures),
            "Tempo": int(config.tempo_bins),
            "Position": int(config.max_bar_len),
            "Pitch": self.pitch_high - self.pitch_low + 1,
            "Velocity": int(config.velocity_bins),
            "Duration": self.max_duration,
        }
        self.offset, start = {}, len(SPECIAL)
        for kind in self.KINDS:
            self.offset[kind] = start
            start += sizes[kind]
        self.sizes = sizes
        self.vocab_size = start

    # ------------------------------------------------------------------ ids <-> names
    def kind_of(self, token: int) -> tuple[str, int]:
        """(kind, value index within the kind) of a token id; specials are their own kind."""
        if token < len(SPECIAL):
            return SPECIAL[token], 0
        for kind in reversed(self.KINDS):
            if token >= self.offset[kind]:
                if token - self.offset[kind] >= self.sizes[kind]:
                    raise ValueError(f"token id {token} is outside the vocabulary of {self.vocab_size}")
                return kind, token - self.offset[kind]
        raise AssertionError("unreachable")

    def token_name(self, token: int) -> str:
        kind, v = self.kind_of(int(token))
        if kind == "TimeSig":
            return "TimeSig_%d/%d" % self.time_signatures[v]
        if kind == "Pitch":
            return f"Pitch_{self.pitch_low + v}"
        if kind == "Duration":
            return f"Duration_{v + 1}"
        return kind if kind in SPECIAL else f"{kind}_{v}"

    # ------------------------------------------------------------------ encode
    def check(self, piece: Piece) -> None:
        """Raise ValueError for what the vocabulary cannot hold: another grid, a pitch outside
        the range, a time signature without a token (a bar longer than max_bar_len)."""
        if piece.steps_per_beat != self.steps_per_beat:
            raise ValueError(f"the piece has {piece.steps_per_beat} steps per beat, the tokenizer {self.steps_per_beat}")
        if len(piece.notes) and (piece.notes[:, 0].min() < self.pitch_low or piece.notes[:, 0].max() > self.pitch_high):
            raise ValueError(f"pitches must lie in {self.pitch_low}-{self.pitch_high}")
        for b, s in enumerate(piece.time_signatures.tolist()):
            if tuple(s) not in self.sig_index:
                raise ValueError(f"bar {b + 1}: time signature {s[0]}/{s[1]} has no token (bars up to "
                                 f"{self.config.max_bar_len} steps, denominators {self.config.time_signature_denominators})")

    def encode(self, piece: Piece, bos: bool = True, eos: bool = True) -> list[int]:
        """Token ids of a `Piece` (`check` says what it refuses)."""
        self.check(piece)
        notes = piece.notes[np.lexsort((piece.notes[:, 0], piece.notes[:, 1]))]  # by start, then pitch
        off = self.offset
        tempo_cls = tempo_to_class(torch.as_tensor(piece.bar_tempo()), self.config).tolist()  # (B,)
        vel_cls = velocity_to_class(torch.as_tensor(notes[:, 3]), self.config).tolist()  # (N,)
        bar_of_note = piece.bar_of_step(notes[:, 1])
        ids = [BOS] if bos else []
        sig = tempo = None
        k = 0  # next note
        for b in range(piece.num_bars):
            ids.append(BAR)
            s = tuple(int(x) for x in piece.time_signatures[b])
            if s != sig:
                ids.append(off["TimeSig"] + self.sig_index[s])
                sig = s
            if tempo_cls[b] != tempo:
                ids.append(off["Tempo"] + tempo_cls[b])
                tempo = tempo_cls[b]
            bar_start, position = int(piece.bar_starts[b]), None
            while k < len(notes) and bar_of_note[k] == b:
                p, start, end, _ = (int(x) for x in notes[k])
                if start - bar_start != position:
                    position = start - bar_start
                    ids.append(off["Position"] + position)
                ids += [
                    off["Pitch"] + p - self.pitch_low,
                    off["Velocity"] + vel_cls[k],
                    off["Duration"] + min(end - start, self.max_duration) - 1,
                ]
                k += 1
        if eos:
            ids.append(EOS)
        return ids

    def count_tokens(self, piece: Piece) -> int:
        """len(encode(piece, bos=False, eos=False)) without building the list (for statistics):
        one Bar per bar, a TimeSig and a Tempo where they change, a Position per onset step,
        three tokens per note."""
        self.check(piece)
        sigs = piece.time_signatures
        sig_changes = 1 + int(np.any(sigs[1:] != sigs[:-1], axis=1).sum())
        tempo = tempo_to_class(torch.as_tensor(piece.bar_tempo()), self.config).numpy()
        tempo_changes = 1 + int(np.count_nonzero(np.diff(tempo)))
        onset_steps = len(np.unique(piece.notes[:, 1]))
        return piece.num_bars + sig_changes + tempo_changes + onset_steps + 3 * len(piece.notes)

    # ------------------------------------------------------------------ decode
    def decode(self, ids, default_bpm: float = 120.0, default_velocity: int = 64) -> Piece:
        """The `Piece` of token ids, tolerant of what a sampler may produce: content before the
        first Bar opens a bar of 4/4; a Pitch without Position sits at the bar's start; a
        missing Velocity / Duration takes `default_velocity` / 1 step; a Velocity or Duration
        not right after its note's Pitch (and Velocity) is ignored; positions past the bar's
        end are dropped; notes are cut at the piece's end and overlaps resolved
        (`normalize_notes`). Reading stops at EOS; PAD and BOS are skipped."""
        ids = ids.tolist() if torch.is_tensor(ids) or isinstance(ids, np.ndarray) else list(ids)
        sigs, tempi = [], []  # per bar
        notes = []  # [pitch, bar, position, velocity, duration]
        sig, bpm = (4, 4), float(default_bpm)
        position, expect = 0, None  # expect: the kind that may complete the last note next
        for t in ids:
            kind, v = self.kind_of(int(t))
            if kind == "EOS":
                break
            if kind in ("PAD", "BOS"):
                continue
            if kind == "Bar" or not sigs:  # a new bar (or an implicit first one)
                sigs.append(sig)
                tempi.append(bpm)
                position, expect = 0, None
                if kind == "Bar":
                    continue
            if kind == "TimeSig":
                sig = sigs[-1] = self.time_signatures[v]
            elif kind == "Tempo":
                bpm = tempi[-1] = float(class_to_tempo(torch.tensor(v), self.config))
            elif kind == "Position":
                position, expect = v, None
            elif kind == "Pitch":
                notes.append([self.pitch_low + v, len(sigs) - 1, position, default_velocity, 1])
                expect = "Velocity"
            elif kind == "Velocity" and expect == "Velocity":
                notes[-1][3] = int(class_to_velocity(torch.tensor(v), self.config))
                expect = "Duration"
            elif kind == "Duration" and expect in ("Velocity", "Duration"):
                notes[-1][4] = v + 1
                expect = None
        if not sigs:
            sigs, tempi = [sig], [bpm]
        piece = Piece.from_bars(sigs, bpm=tempi if len(tempi) > 1 else tempi[0], steps_per_beat=self.steps_per_beat,
                                pitch_range=(self.pitch_low, self.pitch_high))
        if not notes:
            return piece
        n = np.asarray(notes, dtype=np.int64)  # (N, 5)
        lengths = piece.bar_lengths[n[:, 1]]
        n = n[n[:, 2] < lengths]
        start = piece.bar_starts[n[:, 1]] + n[:, 2]
        end = np.minimum(start + n[:, 4], piece.num_steps)
        out, _ = normalize_notes(np.stack([n[:, 0], start, end, n[:, 3]], axis=1))
        return piece.replace_notes(out)


def tokens_per_bar(pieces, tokenizer: NoteEventTokenizer) -> dict:
    """Tokens per bar of `pieces` (BOS / EOS not counted): the mean over all bars, the median
    and 90th percentile over pieces, and the totals."""
    per_piece, tokens, bars = [], 0, 0
    for piece in pieces:
        n = tokenizer.count_tokens(piece)
        tokens, bars = tokens + n, bars + piece.num_bars
        per_piece.append(n / piece.num_bars)
    if not bars:
        raise ValueError("no pieces to count tokens of")
    return {
        "mean": tokens / bars,
        "median_of_pieces": float(np.median(per_piece)),
        "p90_of_pieces": float(np.percentile(per_piece, 90)),
        "tokens": tokens,
        "bars": bars,
        "pieces": len(per_piece),
    }


# ============================================================================ the network
def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, head_dim) of rotary position embeddings at integer positions (T,)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hd)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (N, H, T, hd) by its positions' angles (rotate-half layout, as Llama)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """The keys and values of every token so far, per layer: tensors (N, H, capacity, hd),
    preallocated and grown by doubling, so a decoding step writes one position in place (no
    concatenation, no copy of the past). `length` tokens are filled."""

    def __init__(self, config: ARBaselineConfig, batch: int, capacity: int, dtype, device):
        shape = (batch, config.num_heads, max(int(capacity), 1), config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, new_tokens: int) -> None:
        """Make room for `new_tokens` more (doubling the capacity as needed)."""
        need = self.length + new_tokens
        if need <= self.capacity:
            return
        cap = self.capacity
        while cap < need:
            cap *= 2
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros(old.shape[0], old.shape[1], cap, old.shape[3])
                new[:, :, : self.length] = old[:, :, : self.length]
                store[i] = new

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (N, H, T, hd) keys / values after the filled ones; return all of them so far,
        (N, H, length + T, hd) views. `advance(T)` once every layer has written."""
        end = self.length + key.shape[2]
        self.keys[layer][:, :, self.length : end] = key
        self.values[layer][:, :, self.length : end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, tokens: int) -> None:
        self.length += tokens


class ARAttention(nn.Module):
    """Causal multi-head self-attention with rotary positions, through transformers' attention
    interface (`config._attn_implementation`: eager, sdpa or flash_attention_2)."""

    is_causal = True

    def __init__(self, config: ARBaselineConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.scaling = self.head_dim**-0.5
        self.num_key_value_groups = 1
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None):
        N, T, D = x.shape
        qkv = self.qkv(x).view(N, T, 3, self.num_heads, self.head_dim)  # (N, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, T, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (N, H, S, hd): every token so far
        impl = self.config._attn_implementation or "sdpa"
        window = self.config.attention_window
        kwargs = {}
        if impl.startswith("flash"):
            kwargs["sliding_window"] = window or None
        elif T == 1 and window and k.shape[2] > window:  # decoding: only the last `window` keys
            k, v = k[:, :, -window:], v[:, :, -window:]
        attn = eager_attention_forward if impl == "eager" else ALL_ATTENTION_FUNCTIONS[impl]
        out, _ = attn(
            self, q, k, v, mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling, is_causal=True, **kwargs,
        )  # (N, T, H, hd)
        return self.o_proj(out.reshape(N, T, D))


class ARBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ARBaselineConfig, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.attn = ARAttention(config, layer_idx)
        self.norm2 = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_ratio * d, bias=False),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.mlp_ratio * d, d, bias=False),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.dropout(self.attn(self.norm1(x), cos, sin, mask, cache))
        return x + self.dropout(self.mlp(self.norm2(x)))


@dataclass
class ARGeneration:
    """What `ARBaselineModel.generate` returns.

    sequences (N, T0 + K): the prompt then the generated tokens (PAD after a row stopped);
    num_generated (N,): tokens kept per row (a stopping Bar / EOS not counted);
    num_bars (N,): bars opened by the kept tokens (as `decode` counts them); num_sampled: tokens sampled, one per
    network pass; num_forward_passes: sequential network passes (the prefill is one);
    stopped_by: "bars", "eos", "max_new_tokens" or "num_tokens" (the reason of the last row).
    """

    sequences: torch.Tensor
    num_generated: torch.Tensor
    num_bars: torch.Tensor
    num_sampled: int
    num_forward_passes: int
    stopped_by: str
    tokenizer: NoteEventTokenizer

    def to_piece(self, index: int = 0) -> Piece:
        return self.tokenizer.decode(self.sequences[index].cpu())


class ARBaselinePreTrainedModel(PreTrainedModel):
    config_class = ARBaselineConfig
    base_model_prefix = "fractalmidi_ar"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["ARBlock"]


class ARBaselineModel(ARBaselinePreTrainedModel):
    """Decoder-only causal transformer over `NoteEventTokenizer` tokens (untied embeddings)."""

    def __init__(self, config: ARBaselineConfig):
        super().__init__(config)
        self.tokenizer = NoteEventTokenizer(config)
        V, d = self.tokenizer.vocab_size, config.hidden_size
        self.embed_tokens = nn.Embedding(V, d)
        self.layers = nn.ModuleList(ARBlock(config, i) for i in range(config.num_layers))
        self.norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(d, V, bias=False)
        self.post_init()

    # ---------------------------------------------------------------- masks
    def _mask(self, attention_mask, T: int, offset: int, dtype, device):
        """The attention mask for T queries after `offset` cached tokens: None where the kernel's
        own causal flag (or, for one query, attending to every key given) is exact; else an
        additive (N or 1, 1, T, offset + T) mask (causal, the sliding window, padded keys). For
        flash attention, the (N, S) padding mask or None."""
        impl = self.config._attn_implementation or "sdpa"
        window = self.config.attention_window
        padded = attention_mask is not None and not bool(attention_mask.all())
        if impl.startswith("flash"):
            return attention_mask if padded else None
        if T == 1 and not padded:
            return None  # one query sees every cached key (a window slices the keys instead)
        if impl != "eager" and offset == 0 and not window and not padded:
            return None  # plain causal from position 0: the kernel's is_causal flag
        q_pos = torch.arange(offset, offset + T, device=device)
        k_pos = torch.arange(offset + T, device=device)
        allowed = k_pos[None, :] <= q_pos[:, None]  # (T, S)
        if window:
            allowed &= k_pos[None, :] > q_pos[:, None] - window
        allowed = allowed[None, None]  # (1, 1, T, S)
        if padded:
            allowed = allowed & attention_mask.bool()[:, None, None, :]  # (N, 1, T, S)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        **kwargs,
    ) -> CausalLMOutput:
        """input_ids (N, T); attention_mask (N, T) 1 = token, 0 = padding (at the end; with a
        cache: (N, cached + T)); labels (N, T): the loss is next-token cross-entropy of
        labels[:, 1:] from positions :-1 (-100 ignored, as transformers' causal LMs). With a
        cache, the tokens continue the cached ones. `last_only`: logits of the last position only."""
        N, T = input_ids.shape
        offset = cache.length if cache is not None else 0
        x = self.embed_tokens(input_ids)  # (N, T, d)
        positions = torch.arange(offset, offset + T, device=input_ids.device)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)  # (T, hd)
        mask = self._mask(attention_mask, T, offset, x.dtype, x.device)
        if cache is not None:
            cache.reserve(T)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(self.norm(x))  # (N, T or 1, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutput(loss=loss, logits=logits)

    # ---------------------------------------------------------------- generate
    @torch.inference_mode()
    def generate(
        self,
        num_bars: int | None = None,
        num_tokens: int | None = None,
        max_new_tokens: int | None = None,
        prompt_ids=None,
        temperature: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_samples: int = 1,
        progress: bool = False,
    ) -> ARGeneration:
        """Sample tokens one at a time with the KV cache.

        Args:
            num_bars: stop when the generated tokens open bar num_bars + 1 (that Bar token is
                sampled, not kept) or at EOS: num_bars bars after the prompt. Bars are counted
                as `decode` counts them: every Bar token, and, after a prompt without bars,
                content before the first Bar (an implicit bar).
            num_tokens: instead, sample exactly this many tokens, ignoring Bar and EOS (to time
                a given amount of work, e.g. with an untrained model).
            max_new_tokens: a cap on sampled tokens (default: up to max_position_embeddings).
            prompt_ids: token ids to start from, a list or (T0,) / (N, T0) tensor (default: BOS).
            temperature: > 0; the logits are divided by it before sampling every token.
            seed / generator: the same seed gives the same tokens (a generator must live on
                the model's device).
            num_samples: rows sampled at once (all from the same prompt).
            progress: a tqdm bar over tokens.
        Returns:
            an `ARGeneration` (`.sequences`, `.num_forward_passes`, `.to_piece()`).
        """
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if (num_bars is None) == (num_tokens is None):
            raise ValueError("give exactly one of num_bars and num_tokens")
        if num_bars is not None and (not isinstance(num_bars, int) or num_bars < 1):
            raise ValueError(f"num_bars must be a whole number >= 1, got {num_bars}")
        if num_tokens is not None and (not isinstance(num_tokens, int) or num_tokens < 1):
            raise ValueError(f"num_tokens must be a whole number >= 1, got {num_tokens}")
        device = self.embed_tokens.weight.device
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
        prompt = torch.as_tensor([BOS] if prompt_ids is None else prompt_ids, dtype=torch.long, device=device)
        prompt = prompt.reshape(1, -1).expand(int(num_samples), -1) if prompt.dim() == 1 else prompt
        N, T0 = prompt.shape
        room = self.config.max_position_embeddings - T0
        limit = num_tokens if num_tokens is not None else min(max_new_tokens or room, room)
        if limit < 1 or limit > room:
            raise ValueError(f"{limit} tokens after a prompt of {T0} exceed max_position_embeddings = "
                             f"{self.config.max_position_embeddings}")

        # the cache holds the prompt and every sampled token but the last
        capacity = T0 + (limit if num_tokens is not None else min(limit, 4096))  # grows by doubling
        cache = KVCache(self.config, N, capacity, self.embed_tokens.weight.dtype, device)
        passes = 1
        logits = self(prompt, cache=cache, last_only=True).logits[:, -1]  # (N, V): the prefill
        # bars opened by the generated tokens, counted as `decode` counts them: each Bar, and
        # content before the first Bar when the prompt holds no bar yet (an implicit bar)
        bars = torch.zeros(N, dtype=torch.long, device=device)
        implicit = not bool((prompt > EOS).any())
        finished = torch.zeros(N, dtype=torch.bool, device=device)
        kept = torch.zeros(N, dtype=torch.long, device=device)
        out = torch.full((N, limit), PAD, dtype=torch.long, device=device)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=limit, desc="AR generate", unit="tok")
        stopped_by = "num_tokens" if num_tokens is not None else "max_new_tokens"
        sampled = 0
        for i in range(limit):
            probs = torch.softmax(logits.float() / temperature, dim=-1)  # (N, V)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)
            sampled += 1
            bars += ((token == BAR) | (implicit & (bars == 0) & (token > BAR))) & ~finished
            if num_bars is not None:  # the Bar that opens bar num_bars + 1, or EOS, ends a row
                ends = (bars > num_bars) | (token == EOS)
                token = torch.where(finished | ends, PAD, token)
                finished |= ends
                kept += ~finished
            out[:, i] = token
            if bar is not None:
                bar.update(1)
            if num_bars is not None and bool(finished.all()):
                stopped_by = "bars" if bool((bars > num_bars).all()) else "eos"
                break
            if i + 1 == limit:
                break
            logits = self(token[:, None], cache=cache, last_only=True).logits[:, -1]
            passes += 1
        if bar is not None:
            bar.close()
        if num_tokens is not None:
            kept[:] = num_tokens
        generated = out[:, : int(kept.max())]
        return ARGeneration(
            sequences=torch.cat([prompt, generated], dim=1),
            num_generated=kept.cpu(),
            num_bars=(bars.clamp(max=num_bars) if num_bars is not None else bars).cpu(),
            num_sampled=sampled,
            num_forward_passes=passes,
            stopped_by=stopped_by,
            tokenizer=self.tokenizer,
        )


# ============================================================================ sizing
def _count(d: int, layers: int, vocab: int, mlp_ratio: int) -> int:
    return 2 * vocab * d + layers * ((4 + 2 * mlp_ratio) * d * d + 2 * d) + d


def ar_num_parameters(config: ARBaselineConfig) -> int:
    """The parameter count of `ARBaselineModel(config)`, without building it: embedding and
    head 2·V·d, per block (4 + 2·mlp_ratio)·d² weights and two norms of d, a final norm."""
    return _count(config.hidden_size, config.num_layers, NoteEventTokenizer(config).vocab_size, config.mlp_ratio)


def count_parameters(model_or_config) -> int:
    """Parameters of a model, or of the FractalMIDI / AR model a config describes (built on the
    meta device: no memory, no initialisation)."""
    if isinstance(model_or_config, nn.Module):
        return sum(p.numel() for p in model_or_config.parameters())
    if isinstance(model_or_config, ARBaselineConfig):
        return ar_num_parameters(model_or_config)
    from fractalmidi.modeling_fractalmidi import FractalMIDIModel

    with torch.device("meta"):
        model = FractalMIDIModel(model_or_config)
    return sum(p.numel() for p in model.parameters())


TOKENIZER_FIELDS = ("steps_per_beat", "max_bar_len", "pitch_low", "pitch_high", "velocity_bins",
                    "tempo_bins", "tempo_min", "tempo_max")


def ar_config_matching(fractalmidi, tolerance: float = 0.05, aspect: float = 64.0, **overrides) -> ARBaselineConfig:
    """An `ARBaselineConfig` with about as many parameters as a FractalMIDI model (or config).

    The tokenizer takes the FractalMIDI config's grid, pitch range, velocity and tempo classes.
    The shape: widths a multiple of 64 (head size 64; for targets under 1M parameters, multiples
    of 16 with head size 16), depths 1-32; of the shapes within `tolerance` of the target count,
    the one whose width / depth is closest to `aspect` (64: GPT-2's proportion), else the
    closest count. `overrides` set other fields (e.g. attention_window) or fix num_layers /
    hidden_size (the search then keeps them).
    """
    config = fractalmidi.config if isinstance(fractalmidi, nn.Module) else fractalmidi
    target = count_parameters(fractalmidi)
    base = {k: getattr(config, k) for k in TOKENIZER_FIELDS if hasattr(config, k)}
    base.update({k: v for k, v in overrides.items() if k not in ("num_layers", "hidden_size", "num_heads")})
    step, head = (64, 64) if target >= 1_000_000 else (16, 16)
    probe = ARBaselineConfig(**base)
    vocab, mlp_ratio = NoteEventTokenizer(probe).vocab_size, probe.mlp_ratio
    widths = [overrides["hidden_size"]] if "hidden_size" in overrides else range(step, 4097, step)
    depths = [overrides["num_layers"]] if "num_layers" in overrides else range(1, 33)
    shapes = []  # (relative error, distance of width / depth from the aspect, width, depth)
    for d in widths:
        for L in depths:
            err = abs(_count(d, L, vocab, mlp_ratio) - target) / target
            shapes.append((err, abs(math.log(d / L / aspect)), d, L))
    close = [s for s in shapes if s[0] <= tolerance]
    _, _, d, L = min(close, key=lambda s: s[1]) if close else min(shapes)
    heads = overrides.get("num_heads", max(d // head, 1))
    return ARBaselineConfig(hidden_size=d, num_layers=L, num_heads=heads, **base)


# ============================================================================ training data
class ARTokenWindows(torch.utils.data.Dataset):
    """Training examples for the baseline from the rows FractalMIDI trains on (a dataset built
    by `fractalmidi build-dataset`): for a key `(epoch, index)` (as `fractalmidi.training.EpochSampler`
    yields) or a plain index, a random window of `num_bars` bars of song `index`, transposed by
    up to `max_shift` semitones (the same `random_crop` and `augment_transpose` as FractalMIDI's
    windows, drawn from (seed, epoch, index)), as token ids (BOS ... EOS, at most `max_length`)."""

    def __init__(self, rows, tokenizer: NoteEventTokenizer, num_bars: int = 8, max_shift: int = 5,
                 seed: int = 0, max_length: int = 2048):
        self.rows, self.tokenizer = rows, tokenizer
        self.num_bars, self.max_shift, self.seed, self.max_length = num_bars, max_shift, seed, max_length

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> list[int]:
        from fractalmidi.data import augment_transpose, random_crop, row_to_piece

        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        window, _ = random_crop(row_to_piece(self.rows[index]), self.num_bars, rng)
        if self.max_shift:
            window, _ = augment_transpose(window, self.max_shift, generator=rng)
        return self.tokenizer.encode(window)[: self.max_length]


def collate_tokens(examples: list[list[int]]) -> dict[str, torch.Tensor]:
    """Pad token lists at the end into input_ids / attention_mask / labels (N, T) (labels -100
    on padding)."""
    T = max(len(e) for e in examples)
    ids = torch.full((len(examples), T), PAD, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.as_tensor(e, dtype=torch.long)
        mask[i, : len(e)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def token_batches(rows, tokenizer: NoteEventTokenizer, batch_size: int = 8, num_bars: int = 8, max_shift: int = 5,
                  seed: int = 0, max_length: int = 2048):
    """Endless batches (`collate_tokens`) of random windows, songs in a new seeded order every epoch."""
    windows = ARTokenWindows(rows, tokenizer, num_bars, max_shift, seed, max_length)
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(windows))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield collate_tokens([windows[(epoch, int(j))] for j in order[i : i + batch_size]])
        epoch += 1


def train_ar(model: ARBaselineModel, rows, steps: int, batch_size: int = 8, num_bars: int = 8, lr: float = 3e-4,
             weight_decay: float = 0.01, warmup_steps: int = 100, seed: int = 0, log_every: int = 50, log=print) -> list[float]:
    """A plain training loop (AdamW, linear warmup then cosine decay, gradient clipping at 1) on
    `token_batches` of `rows`. Returns the loss of every step."""
    torch.manual_seed(seed)
    device = model.embed_tokens.weight.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    batches = token_batches(rows, model.tokenizer, batch_size, num_bars, seed=seed,
                            max_length=model.config.max_position_embeddings)
    model.train()
    losses = []
    for step in range(steps):
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach().item())
        if log and (step + 1) % log_every == 0:
            log(f"step {step + 1}/{steps}: loss {np.mean(losses[-log_every:]):.4f}")
    model.eval()
    return losses


__all__ = [
    "ARBaselineConfig",
    "ARBaselineModel",
    "ARGeneration",
    "ARTokenWindows",
    "KVCache",
    "NoteEventTokenizer",
    "ar_config_matching",
    "ar_num_parameters",
    "collate_tokens",
    "count_parameters",
    "token_batches",
    "tokens_per_bar",
    "train_ar",
]
