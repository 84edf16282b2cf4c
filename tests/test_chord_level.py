"""The chord level (issue 12): one token per beat (N, or root x quality; the bass is the root)
right after structure, trained on POP909's aligned per-beat chords, masked where a song has none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.data import chord_beats, collate
from fractalmidi.generation_fractalmidi import Grid
from fractalmidi.modeling_fractalmidi import FractalMIDIModel, bar_lengths
from fractalmidi.structure import QUALITIES
from fractalmidi.training import ValidationWindows, batch_to_tensors
from song_levels import SONGS_TINY, build_song_dataset, level_loss, make_batch, tiny_model, train_songs_tiny, twenty_steps

NQ = len(QUALITIES)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_song_dataset(tmp_path_factory.mktemp("songs") / "ds")


@pytest.fixture(scope="module")
def rows(built):
    return [built[i] for i in range(len(built))]


def annotated(rows):
    good = [i for i in range(len(rows)) if rows[i]["aligned_well"] and any(rows[i]["beat_chord_mask"])]
    bad = [i for i in range(len(rows)) if not rows[i]["aligned_well"]]
    return good, bad


def chord_loss(model, batch, seed=0):
    return level_loss(model, batch, "chords", seed)


def test_config_order_sizes_and_default_iterations():
    c = FractalMIDIConfig.from_json_file(SONGS_TINY)
    assert c.levels == ["structure", "chords", "harmony", "melody", "rhythm", "notes"] and c.use_chords
    assert c.num_iterations == [2, 2, 2, 2, 2, 2] and c.chord_vocab_size == 1 + 12 * NQ
    d = FractalMIDIConfig()
    assert d.levels == ["structure", "harmony", "notes"] and d.num_iterations == [8, 8, 3] and not d.use_chords
    assert FractalMIDIConfig(levels=["structure", "chords", "notes"]).num_iterations == [8, 8, 3]
    assert FractalMIDIConfig(levels=["structure", "chords", "harmony", "melody", "notes"]).num_iterations == [8, 8, 8, 8, 3]
    assert FractalMIDIConfig(levels=["structure", "chords", "melody", "rhythm", "notes"]).num_iterations == [8, 8, 8, 4, 3]
    FractalMIDIConfig(levels=["structure", "chords", "melody", "notes"])  # harmony optional
    for bad in (["structure", "harmony", "chords", "notes"], ["chords", "structure", "notes"],
                ["structure", "melody", "chords", "notes"], ["structure", "chords"],
                ["structure", "rhythm", "melody", "notes"], ["structure", "melody", "notes", "rhythm"]):
        with pytest.raises(ValueError, match="levels ="):
            FractalMIDIConfig(levels=bad)
    with pytest.raises(ValueError, match="num_iterations"):
        FractalMIDIConfig(levels=["structure", "chords", "notes"], num_iterations=[8, 3])
    with pytest.raises(ValueError, match="chord_hidden_size"):
        FractalMIDIConfig(levels=["structure", "chords", "notes"], chord_hidden_size=30, chord_num_heads=4)


def test_chord_beats_crop_and_transposition():
    row = {"aligned_well": True, "bar_starts": [0, 16, 32],
           "beat_chord_mask": [False, True, True, True, True, True, True, True],
           "beat_root": [-1, -1, 0, 0, 7, 7, 9, 11], "beat_quality": [-1, -1, 0, 0, 0, 2, 1, -1]}
    assert chord_beats(row, 0, 32).tolist() == [-1, 0, 1, 1, 1 + NQ * 7, 1 + NQ * 7 + 2, 1 + NQ * 9 + 1, -1]
    # the second bar alone, transposed up 7: roots move mod 12; a window past the annotations is unknown
    assert chord_beats(row, 1, 20, shift=7).tolist() == [1 + NQ * 2, 1 + NQ * 2 + 2, 1 + NQ * 4 + 1, -1, -1]
    assert chord_beats(row, 0, 8, shift=-3).tolist() == [-1, 0]  # N stays N
    assert (chord_beats({**row, "aligned_well": False}, 0, 32) == -1).all()


def test_transform_carries_chords_through_crop_and_transposition(rows):
    good, bad = annotated(rows)
    assert good and bad
    plain = make_batch(rows, good + bad, seed=3, max_shift=0)
    moved = make_batch(rows, good + bad, seed=3, max_shift=5)
    assert plain["chords"].shape == (len(good + bad), -(-plain["step_mask"].shape[1] // 4))
    assert (plain["chords"][len(good):] == -1).all()  # unannotated: unknown, not N
    ch, first = plain["chords"], plain["first_bar"]
    for i, r in enumerate(good):  # the crop: beats of the window
        s0 = rows[r]["bar_starts"][first[i]]
        assert np.array_equal(ch[i, :4], chord_beats(rows[r], first[i], 16))
        b = s0 // 4
        if rows[r]["beat_chord_mask"][b] and rows[r]["beat_root"][b] >= 0 and rows[r]["beat_quality"][b] >= 0:
            assert ch[i, 0] == 1 + NQ * rows[r]["beat_root"][b] + rows[r]["beat_quality"][b]
    # with transposition the roots move by the shift (mod 12), the qualities stay, N stays N
    shifts, firsts = moved["shift"], moved["first_bar"]
    assert any(s != 0 for s in shifts[: len(good)])
    for i, r in enumerate(good):
        steps = int(moved["step_mask"][i].sum())
        a = chord_beats(rows[r], firsts[i], steps).astype(int)  # untransposed
        b = moved["chords"][i, : len(a)].astype(int)
        assert np.array_equal(a <= 0, b <= 0) and np.array_equal(a[a <= 0], b[a <= 0])
        on = a > 0
        assert np.array_equal(((a[on] - 1) // NQ + shifts[i]) % 12, (b[on] - 1) // NQ)
        assert np.array_equal((a[on] - 1) % NQ, (b[on] - 1) % NQ)
        assert np.array_equal(b, chord_beats(rows[r], firsts[i], steps, shifts[i]))
    assert any((moved["chords"][i] > 0).any() for i in range(len(good)))


def test_forward_chord_loss_finite_on_annotated_rows_and_zero_weight_on_others(rows):
    model = tiny_model()
    good, bad = annotated(rows)
    loss = chord_loss(model, make_batch(rows, good))
    assert torch.isfinite(loss) and loss > 0
    assert chord_loss(model, make_batch(rows, bad)).item() == 0.0
    nochords = batch_to_tensors(make_batch(rows, good))
    nochords.pop("chords")
    torch.manual_seed(0)
    assert model(**nochords).losses["chords"].item() == 0.0
    mixed = make_batch(rows, good[:2] + bad)
    changed = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in mixed.items()}
    changed["chords"][2:] = -1
    changed["roll"][2:] = 0
    a, b = chord_loss(model, mixed, seed=5), chord_loss(model, changed, seed=5)
    assert torch.isfinite(a) and a > 0 and torch.equal(a, b)


def test_generate_chords_spans_and_midi_markers(tmp_path):
    from fractalmidi.midi_io import read_song_midi
    from fractalmidi.structure import parse_chord

    model = tiny_model().eval()
    out = model.generate(4, num_samples=2, seed=1)
    T = out.states.shape[1]
    assert out.chords.shape == (2, T // 4) and out.chords.dtype == torch.long
    assert ((out.chords >= 0) & (out.chords < model.config.chord_vocab_size)).all()
    for i in range(2):
        spans = out.chord_spans(i)
        names = out.chord_names(i)
        assert len(names) == T // 4
        covered = np.zeros(T // 4, bool)
        for s, e, name in spans:
            assert 0 <= s < e <= T and s % 4 == 0
            parse_chord(name)
            assert all(names[b] == name for b in range(s // 4, e // 4))
            covered[s // 4 : e // 4] = True
        assert np.array_equal(covered, out.chords[i].numpy() > 0)
        assert all(b[1] <= a[0] for a, b in zip(spans[1:], spans[:-1]))
    song = read_song_midi(out.to_midi(tmp_path / "song.mid"))
    assert song.track("Melody") is not None and song.track("Piano") is not None
    assert [tuple(c) for c in song.chords] == out.chord_spans(0)
    assert out.num_forward_passes == sum(lv.num_passes(2, 1, lv is model.levels[-1]) for lv in model.levels)


def test_lower_levels_condition_sees_the_chords(rows):
    model = tiny_model().eval()
    good, _ = annotated(rows)
    b = batch_to_tensors(make_batch(rows, good[:1]))
    lengths = bar_lengths(b["time_signatures"], model.config)
    grid = Grid(lengths, b["bar_mask"].bool(), b["bar_index"].long(), b["bar_position"].long(), b["step_mask"].bool())

    def parents(chords):
        truth = {"tempo": torch.zeros_like(b["bar_tempo"], dtype=torch.long),
                 "density": torch.zeros_like(b["bar_density"], dtype=torch.long),
                 "states": torch.where(b["roll"][:, 0] > 0, 1, torch.where(b["roll"][:, 1] > 0, 2, 0)),
                 "melody": b["melody"], "chords": chords}
        above, conds = [], {}
        with torch.no_grad():
            for level in model.levels:
                inputs = level.inputs(grid, above)
                if level.name in ("harmony", "melody", "notes"):
                    conds[level.name] = level.cond_proj(inputs["parent"])
                if level.name != "notes" and level.feeds_below:
                    above.append((level, level.state(level.targets(truth, grid), inputs)))
        return conds

    chords = b["chords"].long()
    assert (chords > 0).any()
    other = torch.where(chords > 0, 1 + (chords - 1 + 3 * NQ) % (12 * NQ), chords)  # up a minor third
    c1, c2 = parents(chords), parents(other)
    for name in ("harmony", "melody", "notes"):
        assert not torch.allclose(c1[name], c2[name]), name


def test_twenty_training_steps_lower_the_chord_loss(rows):
    good, _ = annotated(rows)
    before, after = twenty_steps(rows, good, "chords")
    assert after < before - 0.3, (before, after)


def test_validation_windows_carry_melody_and_chords_untransposed(built, rows):
    good, _ = annotated(rows)
    windows = ValidationWindows(built, 4)
    seen = 0
    for k, (index, first) in enumerate(windows.windows):
        if index not in good:
            continue
        ex = windows[k]
        steps = len(ex["bar_index"])
        assert ex["chords"].shape == (-(-steps // 4),) and ex["melody"].shape == (steps,)
        assert np.array_equal(ex["chords"], chord_beats(rows[index], first, steps))
        seen += int((ex["chords"] > 0).any() and (ex["melody"] >= 2).any())
    assert seen > 0
    batch = collate([windows[k] for k in range(min(4, len(windows)))])
    assert "chords" in batch and "melody" in batch


def test_train_accelerate_eval_has_melody_and_chords(tmp_path):
    from fractalmidi.data import load_dataset_dir

    build_song_dataset(tmp_path / "ds", validation_fraction=0.5)
    assert any(load_dataset_dir(tmp_path / "ds", "validation")["aligned_well"])  # an annotated validation song
    log = train_songs_tiny(tmp_path / "ds", tmp_path / "out", "--max_steps", "2", "--logging_steps", "2",
                           "--eval_steps", "2")
    evals = [r for r in log if "eval/chords" in r]
    assert evals, log
    for r in evals:
        assert np.isfinite(r["eval/chords"]) and r["eval/chords"] > 0
        assert np.isfinite(r["eval/melody"]) and r["eval/melody"] > 0
    assert all(np.isfinite(r["train/chords"]) for r in log if "train/chords" in r)
    final = FractalMIDIModel.from_pretrained(tmp_path / "out" / "final")
    assert final.config.levels[1] == "chords"
    # the song priors of the final generation config: forms, and with a rhythm level its bar patterns
    gen = final.generation_config
    assert gen.form_prior and 0 <= gen.minor_share <= 1
    assert "rhythm" in final.config.levels
    assert len(gen.rhythm_patterns["weights"]) == 16 and gen.rhythm_prior == 1.0
    assert abs(sum(gen.rhythm_patterns["weights"]) - 1) < 1e-4
