"""FractalMIDI: a hierarchical masked-prediction model for piano music (transformers PreTrainedModel).

This file travels with Hub checkpoints for `trust_remote_code`: it imports only torch,
transformers and its sibling files.

Three levels, top down (see `FractalMIDIConfig`), each a bidirectional transformer whose blocks
are modulated (adaLN-Zero, as DiT) by a condition computed from the levels above:

    structure  (N, B) bars:   tempo class and density class per bar        -> logits for both
    harmony    (N, H) patches: 12 pitch classes sounding in each patch      -> 12 Bernoulli logits
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
from .generation_fractalmidi import FractalMIDIGenerationMixin
from .tokens_fractalmidi import density_to_class, tempo_to_class, velocity_to_class

NUM_STATES = 3  # per step and pitch: 0 silent, 1 onset, 2 held (sounding, started earlier)
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
class StructureLevel(nn.Module):
    """Level 0: one token per bar holding a tempo class and a density class (each may be masked),
    plus the bar's length in steps (known: it is the time signature)."""

    def __init__(self, config: FractalMIDIConfig):
        super().__init__()
        d = config.structure_hidden_size
        self.tempo_mask_id, self.density_mask_id = config.tempo_bins, config.density_bins
        self.tempo_embed = nn.Embedding(config.tempo_bins + 1, d)  # last id = [MASK]
        self.density_embed = nn.Embedding(config.density_bins + 1, d)
        self.length_embed = nn.Embedding(config.max_bar_len + 1, d)
        self.cond = nn.Parameter(torch.zeros(d))  # Level 0 has no level above: a learned condition
        self.transformer = LevelTransformer(
            config, d, config.structure_num_layers, config.structure_num_heads, window=0
        )
        self.tempo_head = nn.Linear(d, config.tempo_bins)
        self.density_head = nn.Linear(d, config.density_bins)

    def forward(self, tempo_ids, density_ids, lengths, valid):
        """tempo_ids, density_ids (N, B) classes or the mask id; lengths (N, B); valid (N, B).
        Returns hidden (N, B, d), tempo logits (N, B, tempo_bins), density logits (N, B, density_bins)."""
        x = self.tempo_embed(tempo_ids) + self.density_embed(density_ids) + self.length_embed(lengths)
        cond = self.cond.view(1, 1, -1)  # (1, 1, d): the same for every bar, so modulated once, broadcast
        h = self.transformer(x, cond, valid)
        return h, self.tempo_head(h), self.density_head(h)


class ContentLevel(nn.Module):
    """A level conditioned on the levels above: its parent state through `cond_proj`, or the
    learned `null_cond` where dropped (classifier-free guidance), modulating `transformer`."""

    def condition(self, parent, drop):
        """The adaLN parameters for a parent state (N, L, d_parent) and drop (N,) bool: computed
        once, passed to `forward` as `modulations` in every decoding iteration."""
        cond = torch.where(drop[:, None, None], self.null_cond, self.cond_proj(parent))
        return self.transformer.modulations(cond)


class HarmonyLevel(ContentLevel):
    """The harmonic level: one token per `harmony_patch_steps` steps holding the 12 pitch classes
    that sound in it (the seed's "harmonic compression"), conditioned on the bar's structure."""

    def __init__(self, config: FractalMIDIConfig):
        super().__init__()
        d = config.harmony_hidden_size
        self.pc_in = nn.Linear(NUM_PITCH_CLASSES, d)
        self.mask_embed = nn.Parameter(torch.zeros(d))
        self.bar_position_embed = nn.Embedding(config.max_bar_len, d)
        self.cond_proj = nn.Linear(config.structure_hidden_size, d)
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


class NoteLevel(ContentLevel):
    """The note level: one token per step. Input channels per pitch: onset, held, velocity/127 and
    a mask flag; a pitch-sweep convolution (kernel `pitch_kernel` = an octave along the pitch
    axis, shared over time) sees intervals as such, then the P pitches fold into one token."""

    def __init__(self, config: FractalMIDIConfig):
        super().__init__()
        d, P = config.note_hidden_size, config.num_pitches
        self.num_pitches, self.velocity_bins = P, config.velocity_bins
        k = config.pitch_kernel
        self.pitch_pad = ((k - 1) // 2, k - 1 - (k - 1) // 2)  # "same" padding along the pitch axis
        self.pitch_sweep = nn.Conv2d(4, config.pitch_channels, kernel_size=(1, k))
        self.in_proj = nn.Linear(config.pitch_channels * P, d)
        self.bar_position_embed = nn.Embedding(config.max_bar_len, d)
        parent = config.structure_hidden_size + (config.harmony_hidden_size if config.use_harmony else 0)
        self.cond_proj = nn.Linear(parent, d)
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
                with_velocity=True):
        """states (N, T, P) in {0 silent, 1 onset, 2 held}; velocity (N, T, P) 0-127 (on onsets);
        masked (N, T); bar_position (N, T); parent (N, T, d_parent); drop (N,); valid (N, T);
        or `modulations` from `condition(parent, drop)` instead of parent and drop.
        Returns hidden (N, T, d), state logits (N, T, P, 3), velocity logits (N, T, P, V) (None
        with `with_velocity=False`: `generate` computes them only at the steps that start notes)."""
        N, T, P = states.shape
        dtype = self.pitch_sweep.weight.dtype  # the model's (float32, or bfloat16 when loaded so)
        known = (~masked)[..., None].to(dtype)  # (N, T, 1)
        channels = torch.stack(
            [
                (states == 1).to(dtype) * known,
                (states == 2).to(dtype) * known,
                velocity.to(dtype) / 127.0 * known,
                masked[..., None].to(dtype).expand(N, T, P),
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


# ============================================================================ the model
@dataclass
class FractalMIDIOutput(ModelOutput):
    """Output of `FractalMIDIModel.forward`.

    Args:
        loss: the total loss, `structure_weight * structure + harmony + notes + velocity`.
        losses: each part, as scalar tensors: structure (mean of tempo and density), tempo,
            density, harmony, notes (silent / onset / held), velocity.
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
    """The hierarchy: structure, then (optionally) harmony, then notes. `forward` gives the
    training losses; `generate` (from `FractalMIDIGenerationMixin`) unfolds a new piece."""

    def __init__(self, config: FractalMIDIConfig):
        super().__init__(config)
        self.structure = StructureLevel(config)
        self.harmony = HarmonyLevel(config) if config.use_harmony else None
        self.notes = NoteLevel(config)
        self.post_init()

    # ---------------------------------------------------------------- targets from a roll
    def note_targets(self, roll: torch.Tensor):
        """(N, 3, T, P) roll (onset, sustain, velocity) -> states (N, T, P) in {0, 1, 2} and
        velocities (N, T, P) (0 where no onset)."""
        onset, sustain, velocity = roll[:, 0].bool(), roll[:, 1].bool(), roll[:, 2].long()
        states = torch.where(onset, 1, torch.where(sustain, 2, 0))
        return states, velocity * onset

    def harmony_targets(self, states: torch.Tensor, step_mask: torch.Tensor):
        """(N, T, P) states -> (N, H, 12) pitch classes sounding in each patch, and (N, H) valid."""
        N, T, P = states.shape
        hp = self.config.harmony_patch_steps
        H = -(-T // hp)
        sounding = F.pad((states > 0).float(), (0, 0, 0, H * hp - T))  # (N, H*hp, P)
        per_patch = sounding.view(N, H, hp, P).amax(dim=2)  # (N, H, P)
        pcs = (per_patch @ pitch_class_matrix(self.config, per_patch.device) > 0).float()  # (N, H, 12)
        valid = F.pad(step_mask, (0, H * hp - T))[:, ::hp]  # patch valid if its first step is
        return pcs, valid

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

    # ---------------------------------------------------------------- conditions
    def structure_state(self, tempo_cls, density_cls, lengths, bar_mask):
        """Hidden state of the structure level on (fully known) structure: (N, B, d0)."""
        return self.structure(tempo_cls, density_cls, lengths, bar_mask)[0]

    def note_parent(self, h0, h1, bar_index):
        """The note level's condition per step: its bar's structure state and its patch's
        harmony state, concatenated (N, T, d0 [+ d1])."""
        bars = bar_index.clamp(min=0)
        parent = torch.gather(h0, 1, bars[..., None].expand(-1, -1, h0.shape[-1]))  # (N, T, d0)
        if h1 is not None:
            T = bar_index.shape[1]
            patch = (torch.arange(T, device=h1.device) // self.config.harmony_patch_steps)[None, :, None]
            parent = torch.cat([parent, torch.gather(h1, 1, patch.expand(h1.shape[0], -1, h1.shape[-1]))], dim=-1)
        return parent

    def harmony_parent(self, h0, bar_index, step_mask):
        """The harmony level's condition per patch: the structure state of the bar holding the
        patch's first step (N, H, d0), and each patch's step-in-bar."""
        hp = self.config.harmony_patch_steps
        first = bar_index[:, ::hp].clamp(min=0)  # (N, H)
        return torch.gather(h0, 1, first[..., None].expand(-1, -1, h0.shape[-1]))

    # ---------------------------------------------------------------- training
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
        **kwargs,
    ) -> FractalMIDIOutput:
        """Masked-prediction losses of every level on a batch of `fractalmidi.data.collate`:
        roll (N, 3, T, P), bar_position / bar_index / step_mask (N, T), bar_tempo / bar_density /
        bar_mask (N, B), time_signatures (N, B, 2). Masks and condition drops use torch's RNG."""
        cfg = self.config
        device = self.device
        step_mask, bar_mask = step_mask.bool().to(device), bar_mask.bool().to(device)
        bar_index, bar_position = bar_index.long().to(device), bar_position.long().to(device)
        lengths = bar_lengths(time_signatures.to(device), cfg)
        self.check_bars(lengths, bar_mask, bar_position, step_mask)
        bar_position = bar_position.clamp(min=0) * step_mask
        N = roll.shape[0]
        losses = {}

        # ---- Level 0: structure. Tempo and density are masked independently.
        tempo_cls = tempo_to_class(bar_tempo.to(device), cfg)
        density_cls = density_to_class(bar_density.to(device), cfg)
        mask_t, mask_d = _mask_like(bar_mask), _mask_like(bar_mask)
        _, tempo_logits, density_logits = self.structure(
            tempo_cls.masked_fill(mask_t, cfg.tempo_bins), density_cls.masked_fill(mask_d, cfg.density_bins),
            lengths, bar_mask,
        )
        losses["tempo"] = F.cross_entropy(tempo_logits[mask_t], tempo_cls[mask_t])
        losses["density"] = F.cross_entropy(density_logits[mask_d], density_cls[mask_d])
        losses["structure"] = (losses["tempo"] + losses["density"]) / 2
        h0 = self.structure_state(tempo_cls, density_cls, lengths, bar_mask)  # condition for below

        # ---- Level 1: harmony (pitch classes per patch), conditioned on the structure
        states, velocity = self.note_targets(roll.to(device))
        h1 = None
        if self.harmony is not None:
            pcs, patch_valid = self.harmony_targets(states, step_mask)
            parent = self.harmony_parent(h0, bar_index, step_mask)
            patch_position = bar_position[:, :: cfg.harmony_patch_steps]
            drop = torch.rand(N, device=device) < cfg.cond_drop_prob if self.training else torch.zeros(N, dtype=torch.bool, device=device)
            masked = _mask_like(patch_valid)
            _, pc_logits = self.harmony(pcs, masked, patch_position, parent, drop, patch_valid)
            losses["harmony"] = F.binary_cross_entropy_with_logits(pc_logits[masked], pcs[masked])
            # condition for the note level: the harmony state on the true pitch classes
            none = torch.zeros_like(masked)
            h1, _ = self.harmony(pcs, none, patch_position, parent, torch.zeros_like(drop), patch_valid)

        # ---- Level 2: notes, conditioned on structure (and harmony)
        parent = self.note_parent(h0, h1, bar_index)
        drop = torch.rand(N, device=device) < cfg.cond_drop_prob if self.training else torch.zeros(N, dtype=torch.bool, device=device)
        masked = _mask_like(step_mask)
        _, state_logits, velocity_logits = self.notes(states, velocity, masked, bar_position, parent, drop, step_mask)
        losses["notes"] = F.cross_entropy(state_logits[masked].reshape(-1, NUM_STATES), states[masked].reshape(-1))
        onsets = (states == 1) & masked[..., None]  # (N, T, P)
        if onsets.any():
            losses["velocity"] = F.cross_entropy(velocity_logits[onsets], velocity_to_class(velocity[onsets], cfg))
        else:
            losses["velocity"] = velocity_logits.sum() * 0.0

        w = cfg.structure_weight if structure_weight is None else structure_weight
        loss = w * losses["structure"] + losses["notes"] + losses["velocity"] + losses.get("harmony", 0.0)
        return FractalMIDIOutput(loss=loss, losses=losses)


__all__ = ["FractalMIDIModel", "FractalMIDIPreTrainedModel", "FractalMIDIOutput"]


# `save_pretrained` writes `auto_map` and copies this file and its siblings, so that
# `AutoModel.from_pretrained(path, trust_remote_code=True)` works without the package.
FractalMIDIConfig.register_for_auto_class()
FractalMIDIModel.register_for_auto_class("AutoModel")
