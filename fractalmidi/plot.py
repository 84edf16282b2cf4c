"""A picture of a piece: the piano roll (velocity as colour, bar lines) with its structure
curves (tempo, and density realised against requested) aligned under it. Uses matplotlib's
non-interactive Agg backend; writes PNG atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .piece import Piece


def plot_piece(piece: Piece, path, requested_density=None, title: str | None = None, dpi: int = 110) -> Path:
    """Draw `piece` into a PNG at `path`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = piece.to_roll()  # (3, T, P)
    image = np.where(roll[1] > 0, 40, 0).astype(float)  # sustained cells faint
    onset_t, onset_p = np.nonzero(roll[0])
    image[onset_t, onset_p] = roll[2][onset_t, onset_p]  # onsets at their velocity
    image = np.ma.masked_equal(image.T, 0)  # (P, T)

    width = min(24.0, 4.0 + piece.num_steps / 64)
    fig, (ax_roll, ax_tempo, ax_density) = plt.subplots(
        3, 1, figsize=(width, 7), sharex=True, gridspec_kw={"height_ratios": [4, 1, 1]}
    )
    low, high = piece.pitch_range
    ax_roll.imshow(image, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=127,
                   extent=(0, piece.num_steps, low - 0.5, high + 0.5), interpolation="nearest")
    for ax in (ax_roll, ax_tempo, ax_density):
        for s in piece.bar_starts:
            ax.axvline(s, color="0.8", lw=0.5, zorder=0)
    ax_roll.set_ylabel("pitch")
    ax_roll.set_title(title or f"{piece.num_bars} bars, {len(piece.notes)} notes, {piece.duration_seconds:.0f} s")

    centres = (piece.bar_starts[:-1] + piece.bar_starts[1:]) / 2
    ax_tempo.step(piece.bar_starts[:-1], piece.bar_tempo(), where="post", color="tab:orange")
    ax_tempo.set_ylabel("tempo\n(BPM)")
    ax_density.plot(centres, piece.bar_density(), "o-", ms=3, color="tab:blue", label="realised")
    if requested_density is not None:
        ax_density.plot(centres, np.asarray(requested_density, float), "--", color="tab:red", label="requested")
        ax_density.legend(loc="upper right", fontsize=8)
    ax_density.set_ylabel("density\n(onsets/step)")
    ax_density.set_xlabel(f"step ({piece.steps_per_beat} per quarter note)")
    fig.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
