"""The shipped model's seeded generations stay what they were: seeds 0-7, 16 bars of 4/4,
default decoding, notes (pitch, start, end, velocity), per-bar tempo and pass count, against
`tests/data/expected/shipped_seeds_0-7_16_bars.npz`, stored before the level refactor
(issue 11) by running this same loop. A refactor that should not change the music proves it
here; a change that means to change the music re-stores the file and says so."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).parent / "data" / "expected" / "shipped_seeds_0-7_16_bars.npz"


@pytest.fixture(scope="module")
def shipped():
    from fractalmidi import FractalMIDIModel

    return FractalMIDIModel.from_pretrained(ROOT / "checkpoints" / "fractalmidi-pop909-small").eval()


@pytest.mark.parametrize("seed", range(8))
def test_seeded_generation_is_unchanged(shipped, seed):
    expected = np.load(EXPECTED, allow_pickle=False)
    result = shipped.generate(num_bars=16, seed=seed)
    piece = result.to_piece()
    np.testing.assert_array_equal(piece.notes, expected[f"notes_{seed}"])
    np.testing.assert_allclose(result.bar_tempo[0].cpu().numpy(), expected[f"bar_tempo_{seed}"], rtol=0, atol=1e-4)
    assert result.num_forward_passes == int(expected[f"passes_{seed}"])
