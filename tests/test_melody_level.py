"""The melody level (issue 12, first cut): a monophonic line per step between harmony and notes,
trained on POP909's annotated melody where a song has one, masked where not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.generation_fractalmidi import Grid
from fractalmidi.modeling_fractalmidi import FractalMIDIModel, bar_lengths, melody_tokens
from fractalmidi.training import batch_to_tensors
from song_levels import SONGS_TINY, build_song_dataset, level_loss, make_batch, tiny_model, train_songs_tiny, twenty_steps


@pytest.fixture(scope="module")
def structure_rows(tmp_path_factory):
    ds = build_song_dataset(tmp_path_factory.mktemp("songs") / "ds")
    return [ds[i] for i in range(len(ds))]  # plain dicts: read once


def annotated(rows):
    return [i for i in range(len(rows)) if rows[i]["aligned_well"]], [i for i in range(len(rows)) if not rows[i]["aligned_well"]]


def melody_loss(model, batch, seed=0):
    return level_loss(model, batch, "melody", seed)


def test_config_levels_and_order():
    c = FractalMIDIConfig.from_json_file(SONGS_TINY)
    assert c.levels == ["structure", "chords", "harmony", "melody", "rhythm", "notes"] and c.use_melody
    assert c.melody_vocab_size == 2 + 96 - 48 + 1
    assert FractalMIDIConfig().levels == ["structure", "harmony", "notes"] and not FractalMIDIConfig().use_melody
    FractalMIDIConfig(levels=["structure", "melody", "notes"], num_iterations=[2, 2, 2])  # harmony stays optional
    for bad in (["structure", "melody", "harmony", "notes"], ["structure", "harmony", "notes", "melody"]):
        with pytest.raises(ValueError, match="levels ="):
            FractalMIDIConfig(levels=bad, num_iterations=[2, 2, 2, 2])
    with pytest.raises(ValueError, match="melody_pitch_high"):
        FractalMIDIConfig(melody_pitch_low=60, melody_pitch_high=65)


def test_melody_tokens_fold_pitches_into_the_range():
    c = FractalMIDIConfig.from_json_file(SONGS_TINY)
    data = torch.tensor([[-1, 0, 1, 2 + 48, 2 + 96, 2 + 40, 2 + 100]])
    assert melody_tokens(data, c).tolist() == [[-1, 0, 1, 2, 2 + 48, 2 + 52 - 48, 2 + 88 - 48]]


def test_transform_carries_the_melody_through_crop_and_transposition(structure_rows):
    good, bad = annotated(structure_rows)
    assert good and bad
    batch = make_batch(structure_rows, good + bad, seed=3)
    mel, roll = batch["melody"], batch["roll"]
    assert mel.shape == batch["step_mask"].shape
    assert (mel[len(good):][batch["step_mask"][len(good):]] == -1).all()  # unannotated: unknown, not rests
    assert (mel[~batch["step_mask"]] == -1).all()  # padding
    n, t = np.nonzero(mel >= 2)
    assert len(n) > 0
    # every melody onset sounds in the (transposed) roll at that step: moved with the notes
    assert roll[n, 1, t, mel[n, t] - 2 - 21].all()


def test_forward_melody_loss_finite_on_annotated_rows_and_zero_weight_on_others(structure_rows):
    model = tiny_model()
    good, bad = annotated(structure_rows)
    loss = melody_loss(model, make_batch(structure_rows, good))
    assert torch.isfinite(loss) and loss > 0
    assert melody_loss(model, make_batch(structure_rows, bad)).item() == 0.0
    nomel = batch_to_tensors(make_batch(structure_rows, good))
    nomel.pop("melody")
    torch.manual_seed(0)
    assert model(**nomel).losses["melody"].item() == 0.0  # no annotation at all: nothing fabricated
    # a mixed batch: the unannotated row's content does not touch the melody loss
    mixed = make_batch(structure_rows, good[:2] + bad)
    changed = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in mixed.items()}
    changed["roll"][2:] = 0
    a, b = melody_loss(model, mixed, seed=5), melody_loss(model, changed, seed=5)
    assert torch.isfinite(a) and a > 0 and torch.equal(a, b)


def test_generate_gives_a_monophonic_melody(tmp_path):
    model = tiny_model().eval()
    out = model.generate(4, num_samples=2, seed=1)
    c = model.config
    T = out.states.shape[1]
    assert out.melody.shape == (2, T) and out.melody.dtype == torch.long
    assert ((out.melody >= 0) & (out.melody < c.melody_vocab_size)).all()  # one token per step: monophonic
    prev = torch.cat([torch.zeros(2, 1, dtype=torch.long), out.melody[:, :-1]], 1)
    assert not ((out.melody == 1) & (prev == 0)).any()  # every hold continues a note
    for i in range(2):
        notes = out.melody_notes(i)
        assert len(notes) == int((out.melody[i] >= 2).sum())
        assert (notes[1:, 1] >= notes[:-1, 2]).all()  # no overlap
        assert ((notes[:, 0] >= c.melody_pitch_low) & (notes[:, 0] <= c.melody_pitch_high)).all()
        piece, melody = out.to_song(i)
        assert np.array_equal(melody, notes) and piece.num_steps == T
    from fractalmidi.midi_io import read_song_midi

    song = read_song_midi(out.to_midi(tmp_path / "song.mid"))
    mel = song.track("Melody")
    assert mel is not None and song.track("Piano") is not None
    assert np.array_equal(mel.notes[:, :3], out.melody_notes(0)[:, :3])
    assert out.num_forward_passes == sum(lv.num_passes(2, 1, lv is model.levels[-1]) for lv in model.levels)


def test_note_level_condition_sees_the_melody(structure_rows):
    model = tiny_model().eval()
    good, _ = annotated(structure_rows)
    b = batch_to_tensors(make_batch(structure_rows, good[:1]))
    lengths = bar_lengths(b["time_signatures"], model.config)
    grid = Grid(lengths, b["bar_mask"].bool(), b["bar_index"].long(), b["bar_position"].long(), b["step_mask"].bool())

    def note_parent(melody):
        truth = {"tempo": torch.zeros_like(b["bar_tempo"], dtype=torch.long),
                 "density": torch.zeros_like(b["bar_density"], dtype=torch.long),
                 "states": torch.where(b["roll"][:, 0] > 0, 1, torch.where(b["roll"][:, 1] > 0, 2, 0)), "melody": melody}
        above = []
        with torch.no_grad():
            for level in model.levels[:-1]:
                if level.feeds_below:  # the rhythm level's state conditions no level below
                    tokens, inputs = level.targets(truth, grid), level.inputs(grid, above)
                    above.append((level, level.state(tokens, inputs)))
            parent = model.notes.inputs(grid, above)["parent"]
            return parent, model.notes.cond_proj(parent)

    melody = b["melody"].long()
    other = melody.clone()
    onsets = other >= 2
    other[onsets] = other[onsets] + 3  # the same rhythm, other pitches
    (p1, c1), (p2, c2) = note_parent(melody), note_parent(other)
    d = model.config.structure_hidden_size + model.config.chord_hidden_size + model.config.harmony_hidden_size
    assert p1.shape[-1] == d + model.config.melody_hidden_size
    assert torch.equal(p1[..., :d], p2[..., :d])  # the levels above the melody are the same
    assert not torch.allclose(p1[..., d:], p2[..., d:])  # the melody's state differs
    assert not torch.allclose(c1, c2)  # and so does the note level's condition


def test_twenty_training_steps_lower_the_melody_loss(structure_rows):
    good, _ = annotated(structure_rows)
    before, after = twenty_steps(structure_rows, good, "melody")
    assert after < before - 0.3, (before, after)


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(seed=2).eval()
    model.save_pretrained(tmp_path)
    loaded = FractalMIDIModel.from_pretrained(tmp_path).eval()
    assert loaded.config.levels == model.config.levels and loaded.melody is not None
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, y = model.generate(2, seed=4), loaded.generate(2, seed=4)
    assert torch.equal(x.melody, y.melody) and torch.equal(x.states, y.states)


def test_train_accelerate_runs_with_the_melody_level(tmp_path):
    build_song_dataset(tmp_path / "ds")
    log = train_songs_tiny(tmp_path / "ds", tmp_path / "out", "--max_steps", "4", "--logging_steps", "2",
                           "--eval_steps", "0")
    assert all(np.isfinite(r["train/melody"]) and r["train/melody"] > 0 for r in log)
    assert FractalMIDIModel.from_pretrained(tmp_path / "out" / "final").config.levels[3] == "melody"
