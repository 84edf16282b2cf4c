"""A picture of a piece: the piano roll (velocity as colour, bar lines) with its structure
curves (tempo, and density realised against requested) aligned under it. Uses matplotlib's
non-interactive Agg backend; writes PNG atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import atomic_path
from .piece import Piece


def plot_piece(piece: Piece, path, requested_density=None, title: str | None = None, dpi: int = 110) -> Path:
    """Draw `piece` into a PNG at `path`; returns the path."""
    import matplotlib.pyplot as plt

    fig = draw_piece(piece, requested_density, title)
    path = Path(path)
    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def draw_piece(piece: Piece, requested_density=None, title: str | None = None):
    """The matplotlib figure of `piece`: axes roll, tempo, density (the caller closes it)."""
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
    tempo = piece.bar_tempo()
    # each bar's tempo held to the bar's end: the last value repeated at the final bar line
    ax_tempo.step(piece.bar_starts, np.append(tempo, tempo[-1:]), where="post", color="tab:orange")
    ax_tempo.ticklabel_format(axis="y", useOffset=False, style="plain")  # 118.2, not 1e-10+1.18e2
    lo, hi = float(np.min(tempo)), float(np.max(tempo))
    pad = max(0.05 * (hi - lo), 0.02 * hi, 1.0)  # a flat line sits mid-axis with readable ticks
    ax_tempo.set_ylim(lo - pad, hi + pad)
    ax_tempo.set_ylabel("tempo\n(BPM)")
    ax_density.plot(centres, piece.bar_density(), "o-", ms=3, color="tab:blue", label="realised")
    if requested_density is not None:
        ax_density.plot(centres, np.asarray(requested_density, float), "--", color="tab:red", label="requested")
        ax_density.legend(loc="upper right", fontsize=8)
    ax_density.set_ylabel("density\n(onsets/step)")
    ax_density.set_xlabel(f"step ({piece.steps_per_beat} per quarter note)")
    fig.tight_layout()
    return fig
