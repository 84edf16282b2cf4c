"""The piece's picture: the tempo and density curves under the roll read as numbers."""

import numpy as np
import pytest

from fractalmidi import Piece
from fractalmidi.plot import draw_piece, plot_piece


def _piece(tempo_bpm):
    notes = np.array([[60, 0, 4, 80], [64, 16, 20, 90], [67, 40, 44, 70]])
    return Piece(notes, np.array([0, 16, 32, 48]), np.array([[4, 4]] * 3), np.array([0]), np.array([tempo_bpm]))


@pytest.fixture
def figure():
    import matplotlib.pyplot as plt

    figs = []
    yield lambda piece: figs.append(draw_piece(piece)) or figs[-1]
    for f in figs:
        plt.close(f)


def test_constant_tempo_axis_reads_in_bpm_without_an_offset(figure):
    fig = figure(_piece(118.2432785))
    ax_tempo = fig.axes[1]
    fig.canvas.draw()
    assert ax_tempo.yaxis.get_major_formatter().get_offset() == ""  # was '1e-10+1.182432785e2'
    labels = [t.get_text() for t in ax_tempo.get_yticklabels() if t.get_text()]
    assert labels and all("e" not in t for t in labels)
    lo, hi = ax_tempo.get_ylim()
    assert lo < 118.24 < hi and hi - lo >= 2  # the flat line sits inside a readable range


def test_tempo_line_reaches_the_end_of_the_last_bar(figure):
    piece = _piece(96.0)
    fig = figure(piece)
    x, y = fig.axes[1].lines[-1].get_data()
    assert x[0] == 0 and x[-1] == piece.num_steps == 48  # was the last bar's start, 32
    np.testing.assert_allclose(y, 96.0)


def test_plot_piece_writes_a_png(tmp_path):
    path = plot_piece(_piece(120.0), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
