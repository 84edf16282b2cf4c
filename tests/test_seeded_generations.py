"""The shipped model's seeded generations stay what they were: seeds 0-7, 16 bars of 4/4,
default decoding (the form and key drawn from the model's training forms), the piece's notes
(pitch, start, end, velocity), the melody's notes, the chords per beat, the form, key, per-bar
tempo and pass count, against `tests/data/expected/shipped_seeds_0-7_16_bars.npz`, stored by
`python tests/test_seeded_generations.py` (this same loop) when the songs model was shipped
(issue 12). A refactor that should not change the music proves it here; a change that means
to change the music re-stores the file and says so."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).parent / "data" / "expected" / "shipped_seeds_0-7_16_bars.npz"
SEEDS = range(8)


def load_shipped():
    from fractalmidi import FractalMIDIModel
    from fractalmidi.controls import DEFAULT_MODEL

    return FractalMIDIModel.from_pretrained(DEFAULT_MODEL).eval()


def record(model, seed: int) -> dict:
    """What is compared for one seed, as arrays."""
    result = model.generate(num_bars=16, seed=seed)
    melody = result.melody_notes()
    return {
        f"notes_{seed}": result.to_piece().notes,
        f"melody_{seed}": np.zeros((0, 4), np.int64) if melody is None else melody,
        f"chords_{seed}": (np.zeros(0, np.int64) if result.chords is None else result.chords[0].cpu().numpy()),
        f"bar_tempo_{seed}": result.bar_tempo[0].cpu().numpy(),
        f"passes_{seed}": np.array(result.num_forward_passes),
        f"form_{seed}": np.array(result.form or ""),
        f"key_{seed}": np.array(result.key or ""),
    }


@pytest.fixture(scope="module")
def shipped():
    return load_shipped()


@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_generation_is_unchanged(shipped, seed):
    expected = np.load(EXPECTED, allow_pickle=False)
    got = record(shipped, seed)
    for name in ("notes", "melody", "chords"):
        np.testing.assert_array_equal(got[f"{name}_{seed}"], expected[f"{name}_{seed}"], err_msg=name)
    np.testing.assert_allclose(got[f"bar_tempo_{seed}"], expected[f"bar_tempo_{seed}"], rtol=0, atol=1e-4)
    for name in ("passes", "form", "key"):
        assert got[f"{name}_{seed}"] == expected[f"{name}_{seed}"], name


if __name__ == "__main__":  # re-store the expected file (only when the music is meant to change)
    sys.path.insert(0, str(ROOT))
    model = load_shipped()
    arrays = {}
    for s in SEEDS:
        arrays.update(record(model, s))
    np.savez(EXPECTED, **arrays)
    print(f"stored {EXPECTED}")
