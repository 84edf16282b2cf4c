"""Tokens of the FractalMIDI levels: per-bar tempo, density and per-note velocity as classes.

This file travels with Hub checkpoints for `trust_remote_code`: it imports only torch.
"""

from __future__ import annotations

import math

import torch

# the structure level's form inputs (`structure.form_features` makes them): a phrase's kind
FORM_KINDS = ("unknown", "intro", "outro", "melodic", "instrumental", "melodic once", "instrumental once")
MAX_FORM_POSITION = 16  # bar positions and bars left in a phrase are counted up to this


def tempo_to_class(bpm: torch.Tensor, config) -> torch.Tensor:
    """Tempo (BPM) to its class: `tempo_bins` classes evenly spaced in log-tempo, clipped."""
    lo, hi = math.log(config.tempo_min), math.log(config.tempo_max)
    x = (torch.log(bpm.float().clamp(min=1e-3)) - lo) / (hi - lo) * (config.tempo_bins - 1)
    return x.round().clamp(0, config.tempo_bins - 1).long()


def class_to_tempo(cls: torch.Tensor, config) -> torch.Tensor:
    lo, hi = math.log(config.tempo_min), math.log(config.tempo_max)
    return torch.exp(lo + cls.float() / (config.tempo_bins - 1) * (hi - lo))


def density_to_class(density: torch.Tensor, config) -> torch.Tensor:
    """Density (onsets per step) to its class: `density_bins` classes evenly spaced 0..density_max."""
    x = density.float() / config.density_max * (config.density_bins - 1)
    return x.round().clamp(0, config.density_bins - 1).long()


def class_to_density(cls: torch.Tensor, config) -> torch.Tensor:
    return cls.float() / (config.density_bins - 1) * config.density_max


def velocity_to_class(velocity: torch.Tensor, config) -> torch.Tensor:
    """Velocity 1-127 to one of `velocity_bins` equal-width classes."""
    v = velocity.long().clamp(1, 127) - 1
    return (v * config.velocity_bins // 127).clamp(0, config.velocity_bins - 1)


def class_to_velocity(cls: torch.Tensor, config) -> torch.Tensor:
    """The centre velocity of a class (1-127)."""
    width = 127 / config.velocity_bins
    return (cls.float() * width + width / 2 + 1).round().clamp(1, 127).long()
