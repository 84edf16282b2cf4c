"""FractalMIDI: a hierarchical masked-prediction model for piano music (transformers PreTrainedModel).

This file travels with Hub checkpoints for `trust_remote_code`: it imports only torch,
transformers and its sibling files.

Three levels, top down (see `FractalMIDIConfig`), each a bidirectional transformer whose blocks
are modulated (adaLN-Zero, as DiT) by a condition computed from the levels above:

    structure  (N, B) bars:   tempo class and density class per bar        -> logits for both
    chords     (N, C) beats:  (optional) no chord, or root x quality          -> 1 + 12 * 14 logits
    harmony    (N, H) patches: 12 pitch classes sounding in each patch      -> 12 Bernoulli logits
    melody     (N, T) steps:  (optional) rest / hold / onset of one pitch    -> 2 + melody pitches logits
    notes      (N, T) steps:  per pitch silent / onset / held, velocity     -> 3 + velocity_bins logits per pitch

Training (`forward`): every level sees its own tokens partly masked (a fraction drawn per
example from the cosine schedule, as MaskGIT) and predicts the masked ones; the condition each
level receives is the hidden state of the level above run on the true (unmasked) tokens, or,
with probability `cond_drop_prob`, a learned null condition (what classifier-free guidance
needs). Generation (`generate`) is in `generation_fractalmidi.py`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_fractalmidi import FractalMIDIConfig
from .generation_fractalmidi import MELODY_VELOCITY, FractalMIDIGenerationMixin, Grid, default_generation_config
from .limits_fractalmidi import check_curve_value
from .sampling import (
    apply_temperature, bar_pattern_offsets, cfg_logits, choose_exactly, class_planes, fit_class_count, fit_count_tilt, sample_bernoulli,
    sample_categorical, sample_note_states, softmax_classes, temper_within, MAX_BRIDGE,
)
from .tokens_fractalmidi import FORM_KINDS, MAX_FORM_POSITION
from .tokens_fractalmidi import (
    class_to_density, class_to_tempo, class_to_velocity, density_to_class, tempo_to_class, velocity_to_class,
)

NUM_STATES = 3  # per step and pitch: 0 silent, 1 onset, 2 held (sounding, started earlier)
HELD = 2
NUM_PITCH_CLASSES = 12
LOCAL_GAIN = 10.0  # output multiplier of the note level's local head


def bar_lengths(time_signatures: torch.Tensor, config: FractalMIDIConfig) -> torch.Tensor:
    """(N, B, 2) numerator / denominator -> (N, B) steps per bar (0 for padding bars)."""
    num, den = time_signatures[..., 0].long(), time_signatures[..., 1].long()
    return torch.where(den > 0, num * 4 * config.steps_per_beat // den.clamp(min=1), torch.zeros_like(num))


def pitch_class_matrix(config: FractalMIDIConfig, device=None) -> torch.Tensor:
    """(P, 12) one-hot pitch class of every pitch of the roll."""
    pitches = torch.arange(config.pitch_low, config.pitch_high + 1, device=device)
    return F.one_hot(pitches % NUM_PITCH_CLASSES, NUM_PITCH_CLASSES).float()


# ============================================================================ building blocks
@functools.lru_cache(maxsize=32)
def _rotary_tables(length: int, dim: int, device: torch.device, dtype: torch.dtype, base: float = 10000.0):
    """cos and sin (L, D/2) of the rotary angles of positions 0..L-1, made once per shape (as
    ordinary tensors even under inference mode, so training may reuse them)."""
    with torch.inference_mode(False), torch.no_grad():
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
        angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (L, D/2)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoFormer) of x (..., L, D) at positions 0..L-1."""
    cos, sin = _rotary_tables(x.shape[-2], x.shape[-1], x.device, x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain attention (the "eager" implementation): softmax(q k^T * scaling + mask) v."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (N, H, L, L)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (N, L, H, D)
    return out, weights


class WindowedSelfAttention(nn.Module):
    """Bidirectional multi-head self-attention inside windows of `window` tokens (0 = one window
    over everything). With `shifted`, windows start half a window earlier (Swin), so information
    crosses window borders from one layer to the next. Cost is O(L * window).
    The attention kernel comes from `config._attn_implementation` (eager, sdpa, flash_attention_2)."""

    is_causal = False

    def __init__(self, config: FractalMIDIConfig, hidden_size: int, num_heads: int, window: int, shifted: bool):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.window = window
        self.shift = window // 2 if (shifted and window) else 0
        self.num_key_value_groups = 1
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        N, L, D = x.shape
        W = self.window if (self.window and L > self.window) else L
        shift = self.shift if W < L else 0
        back = (-(L + shift)) % W
        if shift or back:  # pad so that windows tile the sequence; pads are masked out
            x = F.pad(x, (0, 0, shift, back))
            valid = F.pad(valid, (shift, back), value=False)
        nw = x.shape[1] // W
        qkv = self.qkv(x).view(N * nw, W, 3, self.num_heads, self.head_dim)  # (N*nw, W, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N*nw, H, W, hd)
        q, k = rotate(q), rotate(k)  # rotary positions 0..W-1 inside each window
        valid_w = valid.reshape(N * nw, W)  # (N*nw, W)
        impl = self.config._attn_implementation or "sdpa"
        if valid_w.all():
            mask = None
        elif impl.startswith("flash"):
            mask = valid_w.long()  # flash attention takes a 2D padding mask
        else:
            mask = torch.zeros(valid_w.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill(~valid_w, torch.finfo(q.dtype).min)[:, None, None, :]  # (N*nw, 1, 1, W)
        attn = eager_attention_forward if impl == "eager" else ALL_ATTENTION_FUNCTIONS[impl]
        out, _ = attn(
            self, q, k, v, mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling, is_causal=False,
        )  # (N*nw, W, H, hd)
        out = out.reshape(N, nw * W, D)[:, shift : shift + L]  # (N, L, D)
        return self.o_proj(out)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: the condition (N, L, D) sets a shift, scale
    and gate for the attention and the MLP branch; gates start at 0, so a new block is the identity."""

    def __init__(self, config: FractalMIDIConfig, hidden_size: int, num_heads: int, window: int, shifted: bool):
        super().__init__()
        self.norm1 = nn.RMSNorm(hidden_size, eps=config.rms_norm_eps, elementwise_affine=False)
        self.attn = WindowedSelfAttention(config, hidden_size, num_heads, window, shifted)
        self.norm2 = nn.RMSNorm(hidden_size, eps=config.rms_norm_eps, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, config.mlp_ratio * hidden_size),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.mlp_ratio * hidden_size, hidden_size),
        )
        self.modulation = nn.Linear(hidden_size, 6 * hidden_size)  # zero-initialised (adaLN-Zero)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, modulation, valid):
        """x (N, L, D); modulation (N or 1, L or 1, 6D): `self.modulation(silu(cond))`, see
        `LevelTransformer.modulations`; valid (N, L)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.dropout(self.attn(h, valid))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.dropout(self.mlp(h))


class LevelTransformer(nn.Module):
    """A stack of `Block`s; windows alternate between plain and shifted; a final modulated norm."""

    def __init__(self, config: FractalMIDIConfig, hidden_size: int, num_layers: int, num_heads: int, window: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(config, hidden_size, num_heads, window, shifted=bool(i % 2)) for i in range(num_layers)
        )
        self.norm = nn.RMSNorm(hidden_size, eps=config.rms_norm_eps, elementwise_affine=False)
        self.final_modulation = nn.Linear(hidden_size, 2 * hidden_size)  # zero-initialised

    def modulations(self, cond):
        """The adaLN parameters of every block and of the final norm for a condition (N, L, D):
        they depend on the condition only, so `generate` computes them once per level and
        reuses them in every decoding iteration."""
        c = F.silu(cond)
        return [block.modulation(c) for block in self.blocks] + [self.final_modulation(c)]

    def forward(self, x, cond, valid, modulations=None):
        mods = self.modulations(cond) if modulations is None else modulations
        for block, modulation in zip(self.blocks, mods):
            x = block(x, modulation, valid)
        shift, scale = mods[-1].chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


# ============================================================================ the levels
class Level(nn.Module):
    """One level of the hierarchy: its tokens, its network, its condition from the levels above,
    its training loss, and its part in decoding. The model walks `config.levels` top down, in
    training (`FractalMIDIModel.forward`) and in generation (`generation_fractalmidi.decode_level`,
    one masked-decoding loop for every level), calling:

        targets(truth, grid)                the level's tokens from the piece's notes and structure
        inputs(grid, above)                 what its network reads besides its tokens
        loss(tokens, inputs, training)      its training losses (masked prediction)
        state(tokens, inputs)               its hidden state, the condition of the levels below
        start(run, above)                   decoding: first tokens, positions to generate (N, L), inputs
        sample(run, inputs, tokens, masked, last)  a sample of the masked tokens, confidence (N, L)
        commit(inputs, tokens, sample, where)      tokens with `where` (N, L) taken from the sample
        finish(run, inputs, tokens)         the decoded tokens (and the level's fields of the result)
    """

    name: str
    guided = True  # conditioned on the levels above: classifier-free guidance applies
    feeds_below = True  # its state conditions the levels below (the rhythm level's does not)
    repeats_bars = False  # may repeat a bar's tokens in the next bar of its phrase (`rhythm_repeat`)
    refines = True  # refinement rounds follow its iterations
    stride = 1  # steps per token (content levels)

    def num_passes(self, iterations: int, refine_rounds: int, last: bool) -> int:
        """Sequential network passes of this level in `generate`: its iterations, refinement
        rounds, and the pass giving the levels below their condition."""
        return iterations + (refine_rounds if self.refines else 0) + (0 if last or not self.feeds_below else 1)

    def token_of_step(self, grid: Grid) -> torch.Tensor:
        """(N, T) the index of the token holding each step."""
        T = grid.step_mask.shape[1]
        return (torch.arange(T, device=grid.step_mask.device) // self.stride).expand_as(grid.step_mask)

    def shown(self, tokens):
        """The tokens an intermediate record holds (for a visualiser)."""
        return tokens

    def training_inputs(self, truth, grid):
        """What the level's training loss reads from the batch besides its tokens and inputs."""
        return {}

    def remask_mode(self, config) -> str:
        """Which tokens stay masked between decoding iterations (`sampling.KEEP_MASKED_MODES`)."""
        return config.remask_mode

    def commit(self, inputs, tokens, sample, where):
        return torch.where(where.view(*where.shape, *[1] * (tokens.dim() - 2)), sample, tokens)

    def finish(self, run, inputs, tokens):
        return tokens


class StructureLevel(Level):
    """Level 0: one token per bar holding a tempo class and a density class (each may be masked),
    plus the bar's length in steps (known: it is the time signature). Its tokens are (N, 2B):
    B tempo classes, then B density classes."""

    name, width_field, guided, refines = "structure", "structure_hidden_size", False, False

    def __init__(self, config: FractalMIDIConfig):
        super().__init__()
        d = config.structure_hidden_size
        self.config = config
        self.tempo_embed = nn.Embedding(config.tempo_bins + 1, d)  # last id = [MASK]
        self.density_embed = nn.Embedding(config.density_bins + 1, d)
        self.length_embed = nn.Embedding(config.max_bar_len + 1, d)
        if config.form_inputs:  # the bar's place in the form, the key and the time signature itself
            self.form_kind_embed = nn.Embedding(len(FORM_KINDS), d)
            self.phrase_position_embed = nn.Embedding(MAX_FORM_POSITION + 1, d)
            self.phrase_left_embed = nn.Embedding(MAX_FORM_POSITION + 1, d)
            self.occurrence_embed = nn.Embedding(3, d)
            self.key_embed = nn.Embedding(1 + 2 * NUM_PITCH_CLASSES, d)  # 0 unknown, 1 + 2 * tonic + mode
            self.numerator_embed = nn.Embedding(MAX_NUMERATOR + 1, d)
            self.denominator_embed = nn.Embedding(MAX_DENOMINATOR_LOG2 + 2, d)  # 0 padding, 1 + log2
        self.cond = nn.Parameter(torch.zeros(d))  # Level 0 has no level above: a learned condition
        self.transformer = LevelTransformer(
            config, d, config.structure_num_layers, config.structure_num_heads, window=0
        )
        self.tempo_head = nn.Linear(d, config.tempo_bins)
        self.density_head = nn.Linear(d, config.density_bins)

    def forward(self, tokens, masked, lengths, valid, bar_inputs=None):
        """tokens, masked (N, 2B): tempo then density classes (-1 or anything where masked);
        lengths, valid (N, B); bar_inputs (with `form_inputs`): the ids of `bar_input_ids`
        (N, B, 7). Returns hidden (N, B, d), tempo logits (N, B, tempo_bins), density logits
        (N, B, density_bins)."""
        B = lengths.shape[1]
        ids = tokens.clamp(min=0)
        tempo = torch.where(masked[:, :B], self.config.tempo_bins, ids[:, :B])
        density = torch.where(masked[:, B:], self.config.density_bins, ids[:, B:])
        x = self.tempo_embed(tempo) + self.density_embed(density) + self.length_embed(lengths)
        if self.config.form_inputs:
            tables = (self.form_kind_embed, self.phrase_position_embed, self.phrase_left_embed, self.occurrence_embed,
                      self.key_embed, self.numerator_embed, self.denominator_embed)
            for k, table in enumerate(tables):
                x = x + table(bar_inputs[..., k])
        cond = self.cond.view(1, 1, -1)  # (1, 1, d): the same for every bar, so modulated once, broadcast
        h = self.transformer(x, cond, valid)
        return h, self.tempo_head(h), self.density_head(h)

    def token_of_step(self, grid):
        return grid.bar_index.clamp(min=0)

    def targets(self, truth, grid):
        return torch.cat([truth["tempo"], truth["density"]], dim=1)  # (N, 2B)

    def inputs(self, grid, above):
        out = {"lengths": grid.lengths, "valid": grid.bar_mask}
        if self.config.form_inputs:
            out["bar_inputs"] = bar_input_ids(grid)
        return out

    def loss(self, tokens, inputs, training):
        """Tempo and density are masked independently."""
        B = inputs["lengths"].shape[1]
        masked = torch.cat([_mask_like(inputs["valid"]), _mask_like(inputs["valid"])], dim=1)  # (N, 2B)
        _, tempo_logits, density_logits = self(tokens, masked, **inputs)
        mask_t, mask_d = masked[:, :B], masked[:, B:]
        tempo = F.cross_entropy(tempo_logits[mask_t], tokens[:, :B][mask_t])
        density = F.cross_entropy(density_logits[mask_d], tokens[:, B:][mask_d])
        return {"tempo": tempo, "density": density, "structure": (tempo + density) / 2}

    def state(self, tokens, inputs, modulations=None):
        return self(tokens, torch.zeros_like(tokens, dtype=torch.bool), **inputs)[0]

    # ---- decoding
    def start(self, run, above):
        """The classes that are given (-1 = to generate): the user's structure, and the prompt's
        bars outside the region."""
        cfg, B, device = self.config, run.num_bars, run.device
        known = torch.full((2, B), -1, dtype=torch.long, device=device)  # tempo, density
        if run.prompt is not None:
            pb = run.prompt.num_bars
            keep = ~run.gen_bars[:pb].to(device)
            known[0, :pb][keep] = tempo_to_class(run.prompt_tempo[keep], cfg)
            known[1, :pb][keep] = density_to_class(run.prompt_density[keep], cfg)
        for name in run.structure:
            if name not in ("tempo", "density"):
                raise ValueError(f"structure has an unknown key {name!r} (allowed: 'tempo', 'density')")
        for row, (name, convert) in enumerate((("tempo", tempo_to_class), ("density", density_to_class))):
            values = run.structure.get(name)
            if values is None:
                continue
            if len(values) != B:
                raise ValueError(f"structure[{name!r}] has {len(values)} values for {B} bars")
            for i, v in enumerate(values):
                if v is not None:
                    v = check_curve_value(name, i + 1, v, cfg.density_max)  # finite, in the model's range
                    known[row, i] = convert(torch.tensor(v, device=device), cfg)
        tokens = known.view(1, 2 * B).expand(run.num_samples, 2 * B)  # (N, 2B)
        return tokens, tokens < 0, self.inputs(run.grid, above)

    def sample(self, run, inputs, tokens, masked, last):
        _, tempo_logits, density_logits = run.count_pass(self, tokens, masked, **inputs)
        st, ct = sample_categorical(tempo_logits, run.temperature, run.generator, run.top_p)  # (N, B)
        sd, cd = sample_categorical(density_logits, run.temperature, run.generator, run.top_p)
        return torch.cat([st, sd], 1), torch.cat([ct, cd], 1)

    def finish(self, run, inputs, tokens):
        """Per bar the tempo (BPM) and density (onsets per step) Level 0 settled on: the user's
        exact values and the prompt's where given, else the class centres."""
        B = run.num_bars
        for row, (name, convert) in enumerate((("bar_tempo", class_to_tempo), ("requested_density", class_to_density))):
            values = convert(tokens[:, row * B : (row + 1) * B], self.config)  # (N, B)
            for i, v in enumerate(run.structure.get(("tempo", "density")[row]) or []):
                if v is not None:
                    values[:, i] = float(v)
            if run.prompt is not None:
                given = (run.prompt_tempo, run.prompt_density)[row]
                keep = ~run.gen_bars[: len(given)].to(values.device)
                values[:, : len(given)][:, keep] = given[keep]
            run.outputs[name] = values
        return tokens


MAX_NUMERATOR = 32  # time signatures: numerators 1-32, denominators 1-32 (limits_fractalmidi)
MAX_DENOMINATOR_LOG2 = 5


def bar_input_ids(grid: Grid) -> torch.Tensor:
    """The structure level's per-bar input ids with `form_inputs` (N, B, 7): the form's four
    (`grid.form`: kind, position, bars left, occurrence; 0 unknown), the key (0 unknown, else
    1 + 2 * tonic + mode), the numerator (0 padding) and 1 + log2 of the denominator (0 padding)."""
    N, B = grid.lengths.shape
    device = grid.lengths.device
    form = grid.form if grid.form is not None else torch.zeros(N, B, 4, dtype=torch.long, device=device)
    if grid.key is not None:
        tonic, mode = grid.key[:, 0].long(), grid.key[:, 1].long()
        key = torch.where((tonic >= 0) & (mode >= 0), 1 + 2 * tonic.clamp(0, 11) + mode.clamp(0, 1), 0)
    else:
        key = torch.zeros(N, dtype=torch.long, device=device)
    if grid.time_signatures is not None:
        num, den = grid.time_signatures[..., 0].long(), grid.time_signatures[..., 1].long()
        numerator = num.clamp(0, MAX_NUMERATOR)
        denominator = torch.where(den > 0, 1 + torch.log2(den.clamp(min=1).float()).round().long().clamp(0, MAX_DENOMINATOR_LOG2), 0)
    else:
        numerator = denominator = torch.zeros(N, B, dtype=torch.long, device=device)
    return torch.cat([form.long().clamp(min=0), key[:, None, None].expand(N, B, 1), numerator[..., None],
                      denominator[..., None]], dim=-1)


class ContentLevel(Level):
    """A level conditioned on the levels above: their states at its tokens (`parent`) through
    `cond_proj`, or the learned `null_cond` where dropped (classifier-free guidance), modulating
    `transformer`. One token per `stride` steps."""

    def parent_size(self, config):
        """The width of the condition: the widths of the levels above, concatenated."""
        above = config.levels[: config.levels.index(self.name)]
        return sum(getattr(config, LEVEL_CLASSES[name].width_field) for name in above if LEVEL_CLASSES[name].feeds_below)

    def condition(self, parent, drop):
        """The adaLN parameters for a parent state (N, L, d_parent) and drop (N,) bool: computed
        once, passed to `forward` as `modulations` in every decoding iteration."""
        cond = torch.where(drop[:, None, None], self.null_cond, self.cond_proj(parent))
        return self.transformer.modulations(cond)

    def inputs(self, grid, above):
        """Each token's step in its bar; the states of the levels above at the token holding its
        first step, concatenated (N, L, d_parent); and which tokens are real."""
        parts = []
        for level, h in above:
            index = level.token_of_step(grid)[:, :: self.stride]  # (N, L)
            parts.append(torch.gather(h, 1, index[..., None].expand(-1, -1, h.shape[-1])))
        return {"position": grid.bar_position[:, :: self.stride], "parent": torch.cat(parts, dim=-1),
                "valid": grid.step_mask[:, :: self.stride]}

    def drop(self, N, device, training):
        """Training: which examples get the null condition (probability `cond_drop_prob`)."""
        if training:
            return torch.rand(N, device=device) < self.config.cond_drop_prob
        return torch.zeros(N, dtype=torch.bool, device=device)

    def start(self, run, above):
        """The prompt's tokens; the tokens whose first step lies in the region are generated."""
        N = run.num_samples
        tokens = self.targets(run.known, run.grid)
        editable = run.region[:: self.stride][None, :].expand(N, -1)  # (N, L)
        return tokens, editable, self.inputs(run.grid, above)


class TokenLevel(ContentLevel):
    """A level of one categorical token per `stride` steps, learnt from annotations: ids
    0..vocab_size-1, -1 unknown (read as [MASK], as the masked tokens are). Rows and tokens
    without an annotation give no loss. Its size comes from the config fields
    `{prefix}_hidden_size`, `_num_layers`, `_num_heads`, `_window`; a subclass gives `name`,
    `prefix`, its vocabulary and stride, `targets` (the batch's annotation as tokens) and
    `finish` (its fields of the result)."""

    prefix = ""

    def remask_mode(self, config) -> str:
        return config.token_remask_mode

    def __init__(self, config: FractalMIDIConfig, vocab_size: int, stride: int = 1):
        super().__init__()
        p = self.prefix
        d = getattr(config, f"{p}_hidden_size")
        self.config, self.vocab_size, self.stride = config, vocab_size, stride
        self.token_embed = nn.Embedding(vocab_size + 1, d)  # last id = [MASK] (and unknown)
        self.bar_position_embed = nn.Embedding(config.max_bar_len, d)
        self.cond_proj = nn.Linear(self.parent_size(config), d)
        self.null_cond = nn.Parameter(torch.zeros(d))
        self.transformer = LevelTransformer(config, d, getattr(config, f"{p}_num_layers"),
                                            getattr(config, f"{p}_num_heads"), getattr(config, f"{p}_window"))
        self.head = nn.Linear(d, vocab_size)

    def forward(self, tokens, masked, bar_position, parent, drop, valid, modulations=None):
        """tokens (N, L) (-1 unknown); masked (N, L); bar_position (N, L) step in bar of each
        token; parent (N, L, d_parent); drop (N,) bool; or `modulations` instead of parent and
        drop. Returns hidden (N, L, d) and logits (N, L, vocab_size)."""
        ids = torch.where(masked | (tokens < 0), self.vocab_size, tokens)
        x = self.token_embed(ids) + self.bar_position_embed(bar_position)
        if modulations is None:
            modulations = self.condition(parent, drop)
        h = self.transformer(x, None, valid, modulations)
        return h, self.head(h)

    def loss(self, tokens, inputs, training):
        """Masked prediction over the known tokens only."""
        drop = self.drop(tokens.shape[0], tokens.device, training)
        masked = _mask_like(inputs["valid"] & (tokens >= 0))
        _, logits = self(tokens, masked, inputs["position"], inputs["parent"], drop, inputs["valid"])
        if masked.any():
            return {self.name: F.cross_entropy(logits[masked], tokens[masked])}
        return {self.name: logits.sum() * 0.0}

    def state(self, tokens, inputs, modulations=None):
        """The level's state on its tokens, none masked (unknown ones read as [MASK])."""
        none = torch.zeros_like(tokens, dtype=torch.bool)
        no_drop = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        return self(tokens, none, inputs["position"], inputs["parent"], no_drop, inputs["valid"], modulations)[0]

    # ---- decoding
    def start(self, run, above):
        """The tokens the caller gives (`run.known[name]`: `generate(chords=...)`,
        `generate(melody=...)`) are known and kept; the others whose first step lies in the
        region are generated, the rest stay unknown."""
        editable = run.region[:: self.stride][None, :].expand(run.num_samples, -1)  # (N, L)
        tokens = torch.full(editable.shape, -1, dtype=torch.long, device=run.device)
        if run.known.get(self.name) is not None:
            given = self.targets(run.known, run.grid)  # (N, L), -1 where free
            tokens = torch.where(given >= 0, given, tokens)
            editable = editable & (given < 0)
        return tokens, editable, self.inputs(run.grid, above)

    def sample(self, run, inputs, tokens, masked, last):
        (_, logits), uncond = run.guided_pass(self, inputs, tokens, masked)
        if uncond is not None:
            logits = cfg_logits(logits, uncond[1], run.guidance_scale)
        return sample_categorical(logits, run.temperature, run.generator, run.top_p)  # (N, L) each


class ChordLevel(TokenLevel):
    """The chord level: one token per beat (`steps_per_beat` steps): 0 no chord (N), 1 + 14 *
    root + quality (`structure.QUALITIES`), -1 unknown. The bass is left out (taken as the
    root). Conditioned on the structure level; its state conditions the levels below
    (harmony, melody, notes). Its targets come from the data's annotated chords (`chords` in
    the batch, see `fractalmidi.data.chord_beats`)."""

    name, width_field, prefix = "chords", "chord_hidden_size", "chord"

    def __init__(self, config: FractalMIDIConfig):
        super().__init__(config, config.chord_vocab_size, config.steps_per_beat)

    def targets(self, truth, grid):
        valid = grid.step_mask[:, :: self.stride]
        chords = truth.get("chords")
        if chords is None:  # no annotation in the batch: unknown everywhere
            return torch.full_like(valid, -1, dtype=torch.long)
        chords = chords.to(valid.device).long()
        C = valid.shape[1]
        if chords.shape[1] < C:
            chords = F.pad(chords, (0, C - chords.shape[1]), value=-1)
        return chords[:, :C].masked_fill(~valid, -1)

    def finish(self, run, inputs, tokens):
        run.outputs["chords"] = tokens
        return tokens


class HarmonyLevel(ContentLevel):
    """The harmonic level: one token per `harmony_patch_steps` steps holding the 12 pitch classes
    that sound in it (the seed's "harmonic compression"), conditioned on the bar's structure."""

    name, width_field = "harmony", "harmony_hidden_size"

    def __init__(self, config: FractalMIDIConfig):
        super().__init__()
        d = config.harmony_hidden_size
        self.config, self.stride = config, config.harmony_patch_steps
        self.pc_in = nn.Linear(NUM_PITCH_CLASSES, d)
        self.mask_embed = nn.Parameter(torch.zeros(d))
        self.bar_position_embed = nn.Embedding(config.max_bar_len, d)
        self.cond_proj = nn.Linear(self.parent_size(config), d)
        self.null_cond = nn.Parameter(torch.zeros(d))
        self.transformer = LevelTransformer(
            config, d, config.harmony_num_layers, config.harmony_num_heads, config.harmony_window
        )
        self.head = nn.Linear(d, NUM_PITCH_CLASSES)

    def forward(self, pcs, masked, bar_position, parent, drop, valid, modulations=None):
        """pcs (N, H, 12) 0/1 (ignored where masked); masked (N, H); bar_position (N, H) step in
        bar of each patch; parent (N, H, d0) structure state of the patch's bar; drop (N,) bool:
        use the null condition; or `modulations` from `condition(parent, drop)` (then parent and
        drop are not read). Returns hidden (N, H, d) and logits (N, H, 12)."""
        x = torch.where(masked[..., None], self.mask_embed, self.pc_in(pcs.to(self.pc_in.weight.dtype)))
        x = x + self.bar_position_embed(bar_position)
        if modulations is None:
            modulations = self.condition(parent, drop)
        h = self.transformer(x, None, valid, modulations)
        return h, self.head(h)

    def targets(self, truth, grid):
        """(N, T, P) note states -> (N, H, 12) pitch classes sounding in each patch."""
        states = truth["states"]
        N, T, P = states.shape
        hp = self.stride
        H = -(-T // hp)
        sounding = F.pad((states > 0).float(), (0, 0, 0, H * hp - T))  # (N, H*hp, P)
        per_patch = sounding.view(N, H, hp, P).amax(dim=2)  # (N, H, P)
        return (per_patch @ pitch_class_matrix(self.config, per_patch.device) > 0).float()  # (N, H, 12)

    def loss(self, pcs, inputs, training):
        drop = self.drop(pcs.shape[0], pcs.device, training)
        masked = _mask_like(inputs["valid"])
        _, logits = self(pcs, masked, inputs["position"], inputs["parent"], drop, inputs["valid"])
        return {"harmony": F.binary_cross_entropy_with_logits(logits[masked], pcs[masked])}

    def state(self, pcs, inputs, modulations=None):
        """The harmony state on the pitch classes, none masked, with the condition."""
        none = torch.zeros_like(pcs[..., 0], dtype=torch.bool)
        no_drop = torch.zeros(pcs.shape[0], dtype=torch.bool, device=pcs.device)
        return self(pcs, none, inputs["position"], inputs["parent"], no_drop, inputs["valid"], modulations)[0]

    def sample(self, run, inputs, pcs, masked, last):
        (_, logits), uncond = run.guided_pass(self, inputs, pcs, masked)
        if uncond is not None:
            logits = cfg_logits(logits, uncond[1], run.guidance_scale)
        sample, conf = sample_bernoulli(logits, run.temperature, run.generator)  # (N, H, 12)
        return sample.float(), conf.clamp_min(1e-6).log().sum(-1).exp()  # joint confidence (N, H)

    def finish(self, run, inputs, pcs):
        run.outputs["harmony"] = pcs
        return pcs


def melody_tokens(melody: torch.Tensor, config: FractalMIDIConfig) -> torch.Tensor:
    """Melody steps as the data give them (-1 unknown, 0 rest, 1 hold, 2 + p the onset of MIDI
    pitch p; see `fractalmidi.data.melody_steps`) -> the melody level's tokens (-1 unknown, 0
    rest, 1 hold, 2 + k the onset of `melody_pitch_low + k`), pitches outside the range moved
    by octaves into it."""
    melody = melody.long()
    low, high = config.melody_pitch_low, config.melody_pitch_high
    p = melody - 2
    p = torch.where(p < low, p + 12 * ((low - p + 11) // 12), p)
    p = torch.where(p > high, p - 12 * ((p - high + 11) // 12), p)
    return torch.where(melody >= 2, 2 + p - low, melody.clamp(min=-1))


def drop_orphan_melody_holds(tokens: torch.Tensor) -> torch.Tensor:
    """A melody "hold" (1) continues the note started at the last onset before it with only
    holds between; holds after a rest, an unknown step or the start become rests. (N, T)."""
    T = tokens.shape[1]
    steps = torch.arange(T, device=tokens.device)[None, :]
    last = torch.where(tokens != 1, steps, -1).cummax(dim=1).values  # (N, T) the last step that is not a hold
    anchor = tokens.gather(1, last.clamp(min=0))
    orphan = (tokens == 1) & ((last < 0) | (anchor < 2))
    return tokens.masked_fill(orphan, 0)


class MelodyLevel(TokenLevel):
    """The melody level: one token per step, a monophonic line: 0 rest, 1 hold (the note goes
    on), 2 + k the onset of pitch `melody_pitch_low + k`, -1 unknown. Conditioned on the
    levels above (structure, chords and harmony when present); its state conditions the note
    level. Its targets come from the data's annotated melody (`melody` in the batch)."""

    name, width_field, prefix = "melody", "melody_hidden_size", "melody"

    def __init__(self, config: FractalMIDIConfig):
        super().__init__(config, config.melody_vocab_size)

    def targets(self, truth, grid):
        melody = truth.get("melody")
        if melody is None:  # no annotation in the batch: unknown everywhere
            return torch.full_like(grid.step_mask, -1, dtype=torch.long)
        return melody_tokens(melody.to(grid.step_mask.device), self.config).masked_fill(~grid.step_mask, -1)

    def sample(self, run, inputs, tokens, masked, last):
        """Two decisions in one draw: the event (rest, hold, or a note start: the starts'
        probabilities summed) at the model's own odds, then the pitch of a start at the level's
        temperature, the nucleus (top_p) cutting the pitches' tail only. A temperature below 1
        over the whole vocabulary sharpened every step toward its likeliest single token, a
        hold, and the nucleus cut starts spread over many pitches: the melody had 2.5 (then 3.1)
        notes a bar against the songs' 4.0, and started a note on an offbeat sixteenth in 3-6%
        of bars against their 11-17%. Sampled so, 4.0, and the songs' profile per position."""
        (_, logits), uncond = run.guided_pass(self, inputs, tokens, masked)
        if uncond is not None:
            logits = cfg_logits(logits, uncond[1], run.guidance_scale)
        return sample_categorical(temper_within(logits, 2, run.temperature, run.top_p), 1.0, run.generator)

    def start(self, run, above):
        """As `TokenLevel.start`; `finish` lays only the generated steps into the roll."""
        tokens, editable, inputs = super().start(run, above)
        inputs["generated"] = editable
        return tokens, editable, inputs

    def finish(self, run, inputs, tokens):
        """Holds that continue no note become rests. The generated line is laid into the note
        level's roll as fixed notes (the note level learnt whole songs, melody included, so it
        writes the accompaniment around it; `FractalMIDIGeneration.to_song` takes it out again)."""
        tokens = drop_orphan_melody_holds(tokens)
        run.outputs["melody"], run.outputs["melody_pitch_low"] = tokens, self.config.melody_pitch_low
        cfg, known = self.config, run.known
        T = tokens.shape[1]
        steps = torch.arange(T, device=tokens.device).expand_as(tokens)
        onset_at = torch.where(tokens >= 2, steps, -1).cummax(dim=1).values  # (N, T) the note's onset step
        pitch_token = tokens.gather(1, onset_at.clamp(min=0))
        q = (cfg.melody_pitch_low + pitch_token - 2 - cfg.pitch_low).clamp(0, cfg.num_pitches - 1)  # (N, T) roll pitch
        inside = (pitch_token >= 2) & (cfg.melody_pitch_low + pitch_token - 2 >= cfg.pitch_low) & (
            cfg.melody_pitch_low + pitch_token - 2 <= cfg.pitch_high)
        lay = inputs["generated"] & (tokens >= 1) & (onset_at >= 0) & inside
        lay &= ~known["fixed"].gather(2, q[..., None])[..., 0]
        n, t = lay.nonzero(as_tuple=True)
        qq = q[n, t]
        nxt = torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], 1)
        last = (nxt[n, t] != 1) & (t + 1 < T)  # a note's last step: the step after it is fixed silent
        run.lay_melody(n, t, qq, tokens[n, t] >= 2, torch.full_like(t, MELODY_VELOCITY),
                       (n[last], t[last] + 1, qq[last]))
        return tokens


class RhythmLevel(TokenLevel):
    """The rhythm level: one token per step, how many notes start there (0 .. `rhythm_max_count`,
    the last meaning that many or more), the melody's included. Conditioned on the levels above;
    it does not condition the note level (whose weights were trained without it): the note
    level starts exactly that many notes at each step (`choose_exactly`) and chooses their
    pitches by its own logits. Sampling each step's count as one token lets bars share a figure
    (an accompaniment in eighths, every bar) where independent onsets per pitch scatter it.
    Its targets are counted from the roll, so every song trains it."""

    name, width_field, prefix = "rhythm", "rhythm_hidden_size", "rhythm"
    feeds_below = False
    repeats_bars = True  # with `rhythm_repeat`, a bar may repeat the rhythm of the bar before (`GenerationRun.bar_repeats`)
    # no refinement round: it bought nothing measurable (24 pieces: per-bar feature distance
    # 0.56 with, 0.58 without) and costs a pass over every step; so a repeat of the form keeps
    # its first phrase's rhythm exactly (its notes still vary)
    refines = False

    def __init__(self, config: FractalMIDIConfig):
        super().__init__(config, config.rhythm_max_count + 1)

    def targets(self, truth, grid):
        counts = (truth["states"] == 1).sum(-1).clamp(max=self.config.rhythm_max_count)  # (N, T)
        return counts.masked_fill(~grid.step_mask, -1)

    def start(self, run, above):
        """Outside the region, the prompt's own counts are known; inside, every step is
        generated, with at least as many notes as start there already (the laid melody's)."""
        editable = run.region[None, :].expand(run.num_samples, -1) & run.grid.step_mask  # (N, T)
        known = self.targets(run.known, run.grid)  # (N, T) from the notes known so far
        tokens = torch.where(editable, -1, known)
        inputs = self.inputs(run.grid, above)
        inputs["least"] = torch.where(editable, known.clamp(min=0), 0)  # fixed onsets at each step
        if run.follow_structure:
            inputs["plan"] = run.grid.bar_index[0], run.outputs["requested_density"] * run.grid.lengths  # (T,), (N, B)
        return tokens, editable, inputs

    def sample(self, run, inputs, tokens, masked, last):
        """Counts below the step's fixed onsets are never drawn; with the plan, one tilt per bar
        makes the bar's expected onsets what its density asks."""
        (_, logits), uncond = run.guided_pass(self, inputs, tokens, masked)
        if uncond is not None:
            logits = cfg_logits(logits, uncond[1], run.guidance_scale)
        logits = apply_temperature(logits.float(), run.temperature)
        values = torch.arange(self.vocab_size, device=logits.device)
        logits = logits.masked_fill(values < inputs["least"][..., None], float("-inf"))
        if run.rhythm_patterns is not None:  # (with rhythm_prior > 0) each 4/4 bar's slots go together, as in the songs
            grid = run.grid
            in_prior = grid.lengths[0][grid.bar_index[0]] == 16  # (T,) steps of 16-step bars
            offsets, inputs["pattern_cluster"] = bar_pattern_offsets(
                logits, grid.bar_index[0], grid.bar_position[0], in_prior, run.rhythm_patterns, run.rhythm_prior,
                inputs.get("pattern_cluster"), run.generator)
            logits = logits + offsets
        if "plan" in inputs:
            bar_index, wanted = inputs["plan"]
            kept = torch.where(masked | (tokens < 0), 0, tokens).float()  # (N, T) counts committed
            have = torch.zeros_like(wanted).index_add_(1, bar_index, kept * inputs["valid"])
            tilt = fit_count_tilt(logits, values, bar_index, wanted - have, masked)  # (N, B)
            logits = logits + tilt[:, bar_index, None] * values
        # no nucleus: as for the note states, counts are not a vocabulary, and top-p cuts the
        # onsets of the steps that have one less often (the offbeat sixteenths) first
        return sample_categorical(logits, 1.0, run.generator)

    def commit(self, inputs, tokens, sample, where):
        # a bar repeating another's rhythm (`rhythm_repeat`) keeps at least its own fixed onsets
        return super().commit(inputs, tokens, torch.maximum(sample, inputs["least"]), where)

    def finish(self, run, inputs, tokens):
        run.outputs["rhythm"] = tokens
        run.step_counts = tokens
        return tokens


class NoteLevel(ContentLevel):
    """The note level: one token per step. Input channels per pitch: onset, held, velocity/127 and
    a mask flag; a pitch-sweep convolution (kernel `pitch_kernel` = an octave along the pitch
    axis, shared over time) sees intervals as such, then the P pitches fold into one token.
    Its tokens are (states, velocity), each (N, T, P)."""

    name, width_field = "notes", "note_hidden_size"

    def __init__(self, config: FractalMIDIConfig):
        super().__init__()
        d, P = config.note_hidden_size, config.num_pitches
        self.config = config
        self.num_pitches, self.velocity_bins = P, config.velocity_bins
        k = config.pitch_kernel
        self.pitch_pad = ((k - 1) // 2, k - 1 - (k - 1) // 2)  # "same" padding along the pitch axis
        self.pitch_sweep = nn.Conv2d(4, config.pitch_channels, kernel_size=(1, k))
        self.in_proj = nn.Linear(config.pitch_channels * P, d)
        self.bar_position_embed = nn.Embedding(config.max_bar_len, d)
        self.cond_proj = nn.Linear(self.parent_size(config), d)
        self.null_cond = nn.Parameter(torch.zeros(d))
        self.transformer = LevelTransformer(config, d, config.note_num_layers, config.note_num_heads, config.note_window)
        self.state_head = nn.Linear(d, P * NUM_STATES)
        self.velocity_head = nn.Linear(d, P * config.velocity_bins)
        self.local_head = None
        kt = config.note_local_kernel
        if kt:  # per pitch, the neighbouring steps' input channels -> state logit offsets
            self.local_head = nn.Conv2d(4, NUM_STATES, kernel_size=(kt, 1), padding=(kt // 2, 0))
            self.local_head.zero_init = True  # zero-initialised (also when a checkpoint lacks it)

    def velocity_logits(self, h):
        """Velocity logits (..., P, V) of hidden states h (..., d)."""
        return self.velocity_head(h).view(*h.shape[:-1], self.num_pitches, self.velocity_bins)

    def forward(self, states, velocity, masked, bar_position, parent, drop, valid, modulations=None,
                with_velocity=True, revealed=None):
        """states (N, T, P) in {0 silent, 1 onset, 2 held}; velocity (N, T, P) 0-127 (on onsets);
        masked (N, T); bar_position (N, T); parent (N, T, d_parent); drop (N,); valid (N, T);
        or `modulations` from `condition(parent, drop)` instead of parent and drop.
        Returns hidden (N, T, d), state logits (N, T, P, 3), velocity logits (N, T, P, V) (None
        with `with_velocity=False`: `generate` computes them only at the steps that start notes)."""
        N, T, P = states.shape
        dtype = self.pitch_sweep.weight.dtype  # the model's (float32, or bfloat16 when loaded so)
        if revealed is None:
            known = (~masked)[..., None].to(dtype)  # (N, T, 1)
            hidden = masked[..., None].to(dtype).expand(N, T, P)
        else:  # cells known inside masked steps (a melody the accompaniment is written around)
            cells = (~masked)[..., None] | revealed  # (N, T, P)
            known, hidden = cells.to(dtype), (~cells).to(dtype)
        channels = torch.stack(
            [
                (states == 1).to(dtype) * known,
                (states == 2).to(dtype) * known,
                velocity.to(dtype) / 127.0 * known,
                hidden,
            ],
            dim=1,
        )  # (N, 4, T, P)
        x = F.gelu(self.pitch_sweep(F.pad(channels, self.pitch_pad)))  # (N, C, T, P)
        x = self.in_proj(x.permute(0, 2, 1, 3).reshape(N, T, -1))  # (N, T, d)
        x = x + self.bar_position_embed(bar_position)
        if modulations is None:
            modulations = self.condition(parent, drop)
        h = self.transformer(x, None, valid, modulations)
        state_logits = self.state_head(h).view(N, T, P, NUM_STATES)
        if self.local_head is not None:
            # (a fixed gain: from zero, Adam's steps of ~lr reach logit offsets of a few units in
            # a few thousand steps instead of tens of thousands)
            state_logits = state_logits + LOCAL_GAIN * self.local_head(channels).permute(0, 2, 3, 1)  # (N, T, P, 3)
        return h, state_logits, (self.velocity_logits(h) if with_velocity else None)

    def targets(self, truth, grid):
        return truth["states"], truth["velocity"]

    def training_inputs(self, truth, grid):
        """With a melody level: the cells of the annotated melody's notes that the roll plays
        (`revealable`, (N, T, P)); in training half the examples see them inside masked steps,
        as `generate` shows the melody it laid into the roll."""
        melody = truth.get("melody")
        if not self.config.use_melody or melody is None:
            return {}
        cfg, states = self.config, truth["states"]
        melody = melody.long()
        T = melody.shape[1]
        steps = torch.arange(T, device=melody.device).expand_as(melody)
        onset_at = torch.where(melody >= 2, steps, -1).cummax(dim=1).values
        pitch = melody.gather(1, onset_at.clamp(min=0)) - 2  # (N, T) MIDI pitch of the sounding note
        sounding = (melody >= 1) & (onset_at >= 0) & (pitch >= cfg.pitch_low) & (pitch <= cfg.pitch_high)
        q = (pitch - cfg.pitch_low).clamp(0, cfg.num_pitches - 1)
        cells = torch.zeros_like(states, dtype=torch.bool)
        cells.scatter_(2, q[..., None], sounding[..., None])
        return {"revealable": cells & (states > 0)}

    def loss(self, tokens, inputs, training):
        states, velocity = tokens
        drop = self.drop(states.shape[0], states.device, training)
        masked = _mask_like(inputs["valid"])
        revealed = inputs.get("revealable")
        if revealed is not None:
            show = torch.rand(states.shape[0], device=states.device) < 0.5
            revealed = revealed & show[:, None, None] & masked[..., None]
        _, state_logits, velocity_logits = self(states, velocity, masked, inputs["position"], inputs["parent"],
                                                drop, inputs["valid"], revealed=revealed)
        cells = masked[..., None].expand_as(states) if revealed is None else masked[..., None] & ~revealed  # (N, T, P)
        losses = {"notes": F.cross_entropy(state_logits[cells], states[cells])}
        onsets = (states == 1) & cells  # (N, T, P)
        if onsets.any():
            losses["velocity"] = F.cross_entropy(velocity_logits[onsets], velocity_to_class(velocity[onsets], self.config))
        else:
            losses["velocity"] = velocity_logits.sum() * 0.0
        return losses

    # ---- decoding
    def start(self, run, above):
        """Also the cells the prompt fixes, and the plan: each bar's onsets as its density asks."""
        tokens, editable, inputs = super().start(run, above)
        inputs["fixed"] = run.known["fixed"]
        counts = run.step_counts
        if counts is not None:  # the rhythm level's onsets per step, started exactly
            inputs["step_plan"] = counts.clamp(min=0)  # (N, T)
        elif run.follow_structure:
            inputs["plan"] = run.grid.bar_index[0], run.outputs["requested_density"] * run.grid.lengths  # (T,), (N, B)
        tones = run.chord_tones
        if tones is not None and run.chord_gain:  # onsets lean to the given chords' tones, away from the others
            pcs, given = tones
            beat = (torch.arange(run.grid.step_mask.shape[1], device=pcs.device) // self.config.steps_per_beat)
            per_step = (2 * pcs[beat] - 1) * given[beat, None]  # (T, 12): +1 chord tone, -1 other, 0 free beat
            pitch = torch.arange(self.config.pitch_low, self.config.pitch_high + 1, device=pcs.device)
            pitch_pc = pitch % 12
            plan = per_step[:, pitch_pc]  # (T, P)
            if run.chord_bass is not None:  # a slash chord (F/A): in the bass register only its bass
                low = run.chord_bass[beat]  # (T,) the bass pitch class, -1 where none asked
                register = (low[:, None] >= 0) & (pitch[None, :] < BASS_REGISTER_TOP)  # (T, P)
                plan = torch.where(register, 3.0 * (pitch_pc[None, :] == low[:, None]).float() - 1.0, plan)
                inputs["bass_ban"] = register & (pitch_pc[None, :] != low[:, None])  # (T, P) no other onset there
            inputs["chord_plan"] = run.chord_gain * plan  # (T, P) onset logit offsets
        top = run.melody_top
        if top is not None and run.melody_gain:  # the melody stays on top: onsets above it lean away
            pitch = torch.arange(tokens[0].shape[-1], device=top.device)
            inputs["melody_plan"] = -run.melody_gain * ((top[..., None] >= 0) & (pitch > top[..., None])).float()  # (N, T, P)
        return tokens, editable, inputs

    def commit(self, inputs, tokens, sample, where):
        cells = where[..., None] & ~inputs["fixed"]
        return tuple(torch.where(cells, s, t) for s, t in zip(sample, tokens))

    def shown(self, tokens):
        return tokens[0]

    def sample(self, run, inputs, tokens, masked, last):
        """Note states by chains along time (`sample_note_states`), velocities where notes start;
        confidence: the geometric mean over the pitches of a step."""
        states, velocity = tokens
        fixed, scale = inputs["fixed"], run.guidance_scale
        revealed = fixed if self.config.use_melody else None  # the laid melody, seen inside masked steps
        (h, s_logits, _), uncond = run.guided_pass(self, inputs, states, velocity, masked, revealed=revealed,
                                                   want_uncond=last and run.return_influence, with_velocity=False)
        if uncond is not None:
            if last:  # where the condition changes the prediction
                run.outputs["influence"] = (softmax_classes(s_logits) - softmax_classes(uncond[1])).abs().sum(-1) / 2
            if scale != 1.0:
                s_logits = cfg_logits(s_logits, uncond[1], scale)
        # one contiguous plane per state (silent, onset, held): what follows reads one state at a time
        s_logits = class_planes(s_logits.float()).movedim(0, -1)
        # how long notes last follows the model's own estimate: neither the temperature nor
        # top_p (which sharpen and cut the tails) nor the plan's onset offset shortens notes
        # (`sustain` adds to the held state's logit there: notes last longer, or shorter)
        held = s_logits
        if run.sustain:
            held = held + held.new_tensor([0.0, 0.0, run.sustain])
        continuation = softmax_classes(held)
        s_logits = apply_temperature(s_logits, run.temperature)
        active = masked[..., None] & ~fixed  # (N, T, P) cells sampled now
        # the melody plan first: it moves onsets below the melody, the density plan's offset
        # then sets how many there are
        if "melody_plan" in inputs:
            s_logits[..., 1] += inputs["melody_plan"]
        if "plan" in inputs:  # each bar's onsets: what is committed plus what is expected = the plan
            bar_index, wanted = inputs["plan"]  # (T,), (N, B)
            onsets = ((states == 1) & ~active).float().sum(-1)  # (N, T) onsets already in place
            onsets = onsets + restarted_notes(states, active).float().sum(-1)  # and those the sampler must add
            have = torch.zeros_like(wanted).index_add_(1, bar_index, onsets)
            offset = fit_class_count(s_logits, 1, bar_index, wanted - have, active)  # (N, B)
            s_logits[..., 1] += offset[:, bar_index, None]
        if "chord_plan" in inputs:  # after the count: the given chords' tones get onsets on top of it
            s_logits[..., 1] += inputs["chord_plan"]
        ban = inputs.get("bass_ban")  # a slash chord's bass register holds its bass alone
        if ban is not None:
            s_logits[..., 1] = torch.where(ban, -PLAN_LOGIT, s_logits[..., 1])
        if "step_plan" in inputs:  # exactly the rhythm level's onsets at each step, on the likeliest pitches
            start = torch.zeros_like(active)
            n_idx, t_idx = active.any(-1).nonzero(as_tuple=True)  # (K,) the steps sampled now
            if len(n_idx):
                act = active[n_idx, t_idx]  # (K, P)
                have = ((states[n_idx, t_idx] == 1) & ~act).sum(-1)  # onsets kept at those steps
                need = (inputs["step_plan"][n_idx, t_idx] - have).clamp(min=0)
                rows = s_logits[n_idx, t_idx]  # (K, P, 3)
                odds = rows[..., 1] - torch.logaddexp(rows[..., 0], rows[..., 2])  # log-odds of an onset
                # first the notes the chains must start again (a kept hold after them), then the likeliest
                odds = torch.where(restarted_notes(states, active)[n_idx, t_idx], odds + 1e4, odds)
                if ban is not None:  # not even a note started again (it stays silent)
                    odds = torch.where(ban[t_idx], odds - 2e4, odds)
                start[n_idx, t_idx] = choose_exactly(odds, need, act, run.generator)
            forced = torch.where(start, PLAN_LOGIT, -PLAN_LOGIT)
            if "chord_plan" in inputs:  # given chords: more of their tones may start on a beat the rhythm plays
                on_beat = (inputs["position"] % self.config.steps_per_beat == 0) & (inputs["step_plan"] > 0)  # (N, T)
                voiced = (inputs["chord_plan"] > 0) & on_beat[..., None] & ~start  # (N, T, P)
                forced = torch.where(voiced, s_logits[..., 1] - EXTRA_VOICE_COST, forced)
                start = start | voiced
            s_logits[..., 1] = torch.where(active, forced, s_logits[..., 1])
        # no nucleus here: a cell's three states are not a vocabulary, and a per-cell top_p drops
        # every onset less likely than 1 - top_p (with 0.95 it removed most offbeat sixteenths);
        # top_p still filters the velocity classes below and every token level's vocabulary
        probs = softmax_classes(s_logits)  # (N, T, P, 3)
        s, conf = sample_note_states(probs, active, states, run.generator, continuation)  # (N, T, P)
        if "step_plan" in inputs:  # no more onsets than chosen: a chain started again beyond them stays silent
            # (and the kept hold after it, left without its start, is dropped in `finish`)
            s = torch.where(active & (s == 1) & ~start, 0, s)
        onsets = (s == 1) & active  # velocities are drawn only where a note starts: the
        v = torch.zeros_like(s)     # velocity head runs on those steps alone
        if onsets.any():
            n_idx, t_idx = onsets.any(-1).nonzero(as_tuple=True)  # (K,) steps with an onset
            v_logits = self.velocity_logits(h[n_idx, t_idx])  # (K, P, V)
            if uncond is not None and scale != 1.0:
                v_logits = cfg_logits(v_logits, self.velocity_logits(uncond[0][n_idx, t_idx]), scale)
            cells = onsets[n_idx, t_idx]  # (K, P)
            v_cls, _ = sample_categorical(v_logits[cells], run.temperature, run.generator, run.top_p)
            chosen = torch.zeros_like(cells, dtype=v.dtype)
            chosen[cells] = class_to_velocity(v_cls, self.config).to(v.dtype)
            v[n_idx, t_idx] = chosen
        return (s, v), conf.clamp_min(1e-6).log().mean(-1).exp()  # (N, T): geometric mean over pitches

    def finish(self, run, inputs, tokens):
        """A hold whose note start was re-sampled away in a later iteration is silence."""
        states = drop_orphan_holds(tokens[0], inputs["fixed"])
        run.outputs["states"], run.outputs["velocity"] = states, tokens[1] * (states == 1)
        return states, run.outputs["velocity"]


PLAN_LOGIT = 30.0  # an onset logit that decides: the cells the step plan chose start, the others do not
# with given chords, their tones may also start on a beat the rhythm plays, at their onset logit
# less this: chords were recognised on 0.74 of beats with the rhythm's counts alone, 0.84 with
# these extra voices (0.86 at no cost, but with 64% more notes than the density asks)
EXTRA_VOICE_COST = 1.0
# a slash chord's bass (F/A) is the only pitch class of the chord's onsets below this MIDI pitch
# (G3): the songs' lowest note of a bar averages MIDI 43 (3.62 octaves), its range 2.7 octaves
BASS_REGISTER_TOP = 55


def restarted_notes(states: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """(N, T, P) bool: the cells sampled now where `sample_note_states` will have to start a
    note again. A kept "held" cell right after a cell sampled now continues a note whose start
    was not kept (random-order decoding keeps some steps of a note and not others); the sampler
    bridges it back to the pitch's last sounding cell when one that is kept lies at most
    `MAX_BRIDGE` steps before with no kept silence between, else it starts the note there.
    The density plan counts those starts as onsets already in place (with three iterations
    they were a fifth of all onsets, and pieces came out about 0.13 onsets per step denser
    than asked)."""
    T = states.shape[1]
    steps = torch.arange(T, device=states.device)[None, :, None]
    kept = ~active
    before_hold = torch.zeros_like(active)
    before_hold[:, :-1] = kept[:, 1:] & (states[:, 1:] == HELD)
    restart = active & before_hold
    if not restart.any():
        return restart
    last_sound = torch.where(kept & (states > 0), steps, -1).cummax(dim=1).values
    last_silence = torch.where(kept & (states == 0), steps, -1).cummax(dim=1).values
    bridged = (last_sound >= 0) & (last_sound > last_silence) & (steps - last_sound <= MAX_BRIDGE)
    return restart & ~bridged


def drop_orphan_holds(states: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """A "held" cell continues a note: it needs an onset before it with only held cells
    between. Held cells that follow silence (or start the piece) are made silent, so every
    note in the result begins with an onset and the onsets are the notes (fixed cells stay).
    states (N, T, P) -> (N, T, P)."""
    T = states.shape[1]
    steps = torch.arange(T, device=states.device)[None, :, None]
    last = torch.where(states != HELD, steps, -1).cummax(dim=1).values  # (N, T, P) last non-held step
    anchor = states.gather(1, last.clamp(min=0))  # the state there
    orphan = (states == HELD) & ((last < 0) | (anchor != 1)) & ~fixed
    return states.masked_fill(orphan, 0)


LEVEL_CLASSES = {level.name: level for level in (StructureLevel, ChordLevel, HarmonyLevel, MelodyLevel, RhythmLevel,
                                                  NoteLevel)}  # in `config.levels`' order


# ============================================================================ the model
@dataclass
class FractalMIDIOutput(ModelOutput):
    """Output of `FractalMIDIModel.forward`.

    Args:
        loss: the total loss, `structure_weight * structure + chords + harmony + melody + notes + velocity`.
        losses: each part, as scalar tensors: structure (mean of tempo and density), tempo,
            density, chords and melody (with those levels; 0 on a batch without annotations), harmony,
            notes (silent / onset / held), velocity.
    """

    loss: torch.Tensor | None = None
    losses: dict | None = None


class FractalMIDIPreTrainedModel(PreTrainedModel):
    config_class = FractalMIDIConfig
    base_model_prefix = "fractalmidi"
    main_input_name = "roll"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["Block"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Block):
            init.zeros_(module.modulation.weight)
            init.zeros_(module.modulation.bias)
        elif isinstance(module, LevelTransformer):
            init.zeros_(module.final_modulation.weight)
            init.zeros_(module.final_modulation.bias)
        elif getattr(module, "zero_init", False):  # the local head's output: a new one changes nothing
            init.zeros_(module.weight)
            init.zeros_(module.bias)


def _mask_like(valid: torch.Tensor) -> torch.Tensor:
    """A training mask over (N, L) tokens: per example a fraction r = cos(pi/2 * u), u ~ U(0, 1)
    (MaskGIT's cosine schedule), each valid token masked with probability r, and at least one."""
    N, L = valid.shape
    r = torch.cos(math.pi / 2 * torch.rand(N, 1, device=valid.device))  # (N, 1)
    scores = torch.rand(N, L, device=valid.device)
    masked = (scores < r) & valid
    # make sure every example with a valid token has one masked: its lowest score
    first = torch.where(valid, scores, torch.full_like(scores, 2.0)).argmin(dim=1)
    masked[torch.arange(N, device=valid.device), first] |= valid.any(dim=1)
    return masked


class FractalMIDIModel(FractalMIDIGenerationMixin, FractalMIDIPreTrainedModel):
    """The hierarchy: the levels `config.levels` names, top down (structure, optionally harmony,
    notes), each an attribute of that name. `forward` gives the training losses; `generate`
    (from `FractalMIDIGenerationMixin`) unfolds a new piece."""

    def __init__(self, config: FractalMIDIConfig):
        super().__init__(config)
        for name, level in LEVEL_CLASSES.items():
            setattr(self, name, level(config) if name in config.levels else None)
        self.post_init()
        self.generation_config = default_generation_config(config)

    @property
    def levels(self) -> list[Level]:
        return [getattr(self, name) for name in self.config.levels]

    def check_bars(self, lengths, bar_mask, bar_position, step_mask):
        """Refuse bars the model cannot hold, naming the value and the limit."""
        cfg = self.config
        too_long = (lengths > cfg.max_bar_len) & bar_mask
        if too_long.any():
            raise ValueError(f"a bar of {int(lengths[too_long].max())} steps is longer than max_bar_len = {cfg.max_bar_len}")
        if lengths.shape[1] > cfg.max_bars:
            raise ValueError(f"{lengths.shape[1]} bars is more than max_bars = {cfg.max_bars}")
        if (bar_position[step_mask] >= cfg.max_bar_len).any():
            raise ValueError(f"bar positions must be below max_bar_len = {cfg.max_bar_len}")

    def forward(
        self,
        roll: torch.Tensor,
        bar_position: torch.Tensor,
        bar_index: torch.Tensor,
        step_mask: torch.Tensor,
        bar_tempo: torch.Tensor,
        bar_density: torch.Tensor,
        time_signatures: torch.Tensor,
        bar_mask: torch.Tensor,
        structure_weight: float | None = None,
        melody: torch.Tensor | None = None,
        chords: torch.Tensor | None = None,
        form: torch.Tensor | None = None,
        key: torch.Tensor | None = None,
        **kwargs,
    ) -> FractalMIDIOutput:
        """Masked-prediction losses of every level on a batch of `fractalmidi.data.collate`:
        roll (N, 3, T, P), bar_position / bar_index / step_mask (N, T), bar_tempo / bar_density /
        bar_mask (N, B), time_signatures (N, B, 2); melody (N, T) the annotated melody per step
        (-1 unknown, 0 rest, 1 hold, 2 + MIDI pitch on onsets; only the melody level reads it,
        absent = unknown); chords (N, beats) the annotated chord per beat (-1 unknown, 0 N,
        1 + 14 * root + quality; only the chord level reads it). Masks and condition drops use
        torch's RNG.
        Each level is conditioned on the states of the levels above run on the true tokens."""
        cfg, device = self.config, self.device
        step_mask, bar_mask = step_mask.bool().to(device), bar_mask.bool().to(device)
        bar_index, bar_position = bar_index.long().to(device), bar_position.long().to(device)
        lengths = bar_lengths(time_signatures.to(device), cfg)
        self.check_bars(lengths, bar_mask, bar_position, step_mask)
        grid = Grid(lengths, bar_mask, bar_index, bar_position.clamp(min=0) * step_mask, step_mask)
        if cfg.form_inputs:
            grid.time_signatures = time_signatures.to(device).long()
            N, B = lengths.shape
            form = torch.zeros(N, B, 4, dtype=torch.long, device=device) if form is None else torch.as_tensor(form).to(device).long()
            key = torch.full((N, 2), -1, dtype=torch.long, device=device) if key is None else torch.as_tensor(key).to(device).long()
            if self.training and cfg.form_drop_prob > 0:  # some examples without form and key
                hide = torch.rand(N, device=device) < cfg.form_drop_prob
                form = form.masked_fill(hide[:, None, None], 0)
                key = key.masked_fill(hide[:, None], -1)
            grid.form, grid.key = form, key
        roll = roll.to(device)
        onset, sustain = roll[:, 0].bool(), roll[:, 1].bool()
        states = torch.where(onset, 1, torch.where(sustain, 2, 0))  # (N, T, P)
        truth = {"tempo": tempo_to_class(bar_tempo.to(device), cfg), "density": density_to_class(bar_density.to(device), cfg),
                 "states": states, "velocity": roll[:, 2].long() * onset}
        if melody is not None:
            truth["melody"] = melody.to(device)
        if chords is not None:
            truth["chords"] = chords.to(device)

        # in training, a frozen level (no parameter to train: `--freeze`) gives no loss, and its
        # state, when a level below needs it, is computed without gradients
        trains = [not self.training or any(p.requires_grad for p in level.parameters()) for level in self.levels]
        losses, above = {}, []
        for k, level in enumerate(self.levels):
            needed = level.feeds_below and any(trains[k + 1:])
            if not trains[k] and not needed:
                continue
            tokens, inputs = level.targets(truth, grid), level.inputs(grid, above)
            if trains[k]:
                losses.update(level.loss(tokens, {**inputs, **level.training_inputs(truth, grid)}, self.training))
            if needed:
                with torch.set_grad_enabled(torch.is_grad_enabled() and trains[k]):
                    above.append((level, level.state(tokens, inputs)))

        w = cfg.structure_weight if structure_weight is None else structure_weight
        # the total: the structure loss (the mean of its tempo and density parts) weighted, the others as they are
        loss = sum((w if name == "structure" else 1.0) * value for name, value in losses.items()
                   if name not in ("tempo", "density"))
        return FractalMIDIOutput(loss=loss, losses=losses)


__all__ = ["FractalMIDIModel", "FractalMIDIPreTrainedModel", "FractalMIDIOutput"]

