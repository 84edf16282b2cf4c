"""The form: per-bar form inputs (data and model), repeats that follow the form at every level,
forms and keys drawn from the training songs, and a given melody kept note for note."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fractalmidi import FractalMIDIConfig, FractalMIDIModel
from fractalmidi import data as D
from fractalmidi.generation_fractalmidi import Grid
from fractalmidi.modeling_fractalmidi import bar_input_ids
from fractalmidi.structure import bar_labels, fit_form, form_features, form_string, parse_form, repeat_sources

from song_levels import SONGS_TINY

DATA_DIR = SONGS_TINY.parents[1] / "tests" / "data"


@pytest.fixture(scope="module")
def structure_ds():
    return D.build_dataset(DATA_DIR / "pop909", progress=False, structure_dir=DATA_DIR / "pop909-structure")


def labels(form):
    bl = bar_labels(parse_form(form))
    return bl.letter, bl.phrase, bl.position, bl.length


# ----------------------------------------------------------------------------- the form's bars
def test_form_features_name_kind_position_bars_left_and_occurrence():
    f = form_features(*labels("i2A3B2A3x1o1"))
    assert f.shape == (12, 4)
    assert f[:, 0].tolist() == [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 6, 2]  # intro, A, B, A, x (once), outro
    assert f[2:5, 1].tolist() == [1, 2, 3] and f[2:5, 2].tolist() == [3, 2, 1]  # position + 1, bars left + 1
    assert f[:, 3].tolist() == [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1]  # the second A is a repeat
    unknown = form_features(["", "A"], np.array([-1, 0]), np.array([-1, 0]), np.array([0, 1]))
    assert unknown[0].tolist() == [0, 0, 0, 0] and unknown[1, 0] == 3


def test_repeat_sources_point_at_the_letters_first_phrase():
    src = repeat_sources(*labels("i2A3B2A2X1X1")[:3], [16] * 11)
    # the second A (bars 7-8) repeats bars 2-3; X phrases never recur; B once
    assert src.tolist() == [0, 1, 2, 3, 4, 5, 6, 2, 3, 9, 10]
    # a bar of another length is not a repeat
    lengths = [16] * 11
    lengths[8] = 12
    assert repeat_sources(*labels("i2A3B2A2X1X1")[:3], lengths).tolist()[7:9] == [2, 8]


def test_fit_form_cuts_and_repeats_the_body():
    assert form_string(fit_form(parse_form("i4A8B8o4"), 10)) == "i4A6"
    assert form_string(fit_form(parse_form("i4A8B8o4"), 40)) == "i4A8B8A8B8o4"
    assert form_string(fit_form(parse_form("i4A8B8o4"), 44)) == "i4A8B8A8B8A4o4"
    assert sum(p.bars for p in fit_form(parse_form("A4"), 37)) == 37


# ----------------------------------------------------------------------------- data
def test_training_windows_carry_the_form_and_the_transposed_key(structure_ds):
    train = structure_ds[0]
    row = next(r for r in train if r["aligned_well"] and r["key_tonic"] >= 0)
    feats = form_features(row["bar_letter"], np.asarray(row["bar_phrase"]), np.asarray(row["bar_phrase_position"]),
                          np.asarray(row["bar_phrase_length"]))
    window = D.form_window(row, 3, 8)
    assert window.shape == (8, 4) and np.array_equal(window, feats[3:11]) and window[:, 0].min() > 0
    assert D.key_of(row, 5).tolist() == [(row["key_tonic"] + 5) % 12, row["key_mode"]]
    assert D.key_of({"key_tonic": -1, "key_mode": -1}).tolist() == [-1, -1]
    # past the song's end the window is unknown (padding)
    B = len(row["bar_letter"])
    tail = D.form_window(row, B - 2, 4)
    assert tail[2:].sum() == 0 and np.array_equal(tail[:2], feats[B - 2:])
    examples = train.with_transform(D.make_train_transform(4, seed=1))
    batch = D.collate([examples[i] for i in range(len(examples))])
    assert batch["form"].shape == (len(examples), 4, 4) and batch["key"].shape == (len(examples), 2)
    for i in range(len(examples)):
        r = train[i]
        expect = D.key_of(r, batch["shift"][i])
        assert batch["key"][i].tolist() == expect.tolist()


# ----------------------------------------------------------------------------- model
def tiny(form_inputs=True):
    cfg = json.loads(SONGS_TINY.read_text())
    cfg["form_inputs"] = form_inputs
    torch.manual_seed(0)
    model = FractalMIDIModel(FractalMIDIConfig(**cfg))
    for p in model.structure.parameters():  # an untrained level's embeddings would be all that differs
        torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def structure_state(model, sigs, form=None, key=None):
    B = len(sigs)
    sigs = torch.tensor([sigs])
    lengths = sigs[..., 0] * 16 // sigs[..., 1]
    grid = Grid(lengths, torch.ones(1, B, dtype=torch.bool), None, None, None, time_signatures=sigs,
                form=form, key=key)
    tokens = torch.zeros(1, 2 * B, dtype=torch.long)
    return model.structure.state(tokens, model.structure.inputs(grid, []))


def test_time_signature_form_and_key_reach_the_structure_state():
    model = tiny()
    three, six = structure_state(model, [(3, 4)] * 4), structure_state(model, [(6, 8)] * 4)
    assert not torch.allclose(three, six)  # 12 steps each: told apart by the time signature itself
    form = torch.as_tensor(form_features(*labels("A2B2")))[None]
    assert not torch.allclose(structure_state(model, [(4, 4)] * 4), structure_state(model, [(4, 4)] * 4, form=form))
    keyed = structure_state(model, [(4, 4)] * 4, key=torch.tensor([[7, 0]]))
    assert not torch.allclose(keyed, structure_state(model, [(4, 4)] * 4, key=torch.tensor([[7, 1]])))
    ids = bar_input_ids(Grid(torch.full((1, 2), 12), torch.ones(1, 2, dtype=torch.bool), None, None, None,
                             time_signatures=torch.tensor([[[6, 8], [3, 4]]])))
    assert ids[0, :, 5:].tolist() == [[6, 4], [3, 3]]  # numerator, 1 + log2(denominator)
    # without form inputs (the shipped model's config) the state ignores them
    plain = tiny(form_inputs=False)
    assert torch.allclose(structure_state(plain, [(3, 4)] * 4), structure_state(plain, [(6, 8)] * 4))


def test_training_reads_form_and_key_and_reveals_melody_cells(structure_ds):
    model = tiny()
    model.train()
    examples = structure_ds[0].with_transform(D.make_train_transform(4, seed=2))
    batch = D.collate([examples[i] for i in range(len(examples))])
    tensors = {k: torch.as_tensor(v) for k, v in batch.items() if isinstance(v, np.ndarray)}
    out = model(**tensors)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.structure.form_kind_embed.weight.grad.abs().sum() > 0
    assert model.structure.key_embed.weight.grad.abs().sum() > 0
    # the melody's cells that the roll plays: what the note level may be shown
    truth_states = torch.as_tensor(batch["roll"][:, 1] > 0).long() * 2
    cells = model.notes.training_inputs({"melody": tensors["melody"], "states": truth_states}, None)["revealable"]
    melody = tensors["melody"].long()
    onset = melody >= 2
    n, t = onset.nonzero(as_tuple=True)
    p = melody[n, t] - 2 - model.config.pitch_low
    played = truth_states[n, t, p] > 0
    assert played.float().mean() > 0.8  # aligned songs: the annotated melody is in the roll
    assert cells[n[played], t[played], p[played]].all()
    assert cells.sum(-1).max() <= 1  # one pitch a step


# ----------------------------------------------------------------------------- generation
def test_repeats_of_the_form_copy_their_first_phrase_at_every_level(songs_model):
    form = "i2A4B2A4o2"
    out = songs_model.generate(form=form, seed=3, refine_rounds=0, num_samples=2)
    assert out.form == form and out.states.shape[1] == 14 * 16
    bar = lambda x, b, per_bar: x[:, b * per_bar:(b + 1) * per_bar]  # noqa: E731
    for level, per_bar in (("melody", 16), ("chords", 4)):
        tokens = getattr(out, level)
        for k in range(4):  # the second A (bars 8-11) is the first (bars 2-5)
            assert torch.equal(bar(tokens, 8 + k, per_bar), bar(tokens, 2 + k, per_bar)), (level, k)
    # the notes: the same, but for notes held into a phrase from the bar before it (the intro's
    # into the first A, the B's into the second): each phrase read on its own
    from fractalmidi.modeling_fractalmidi import drop_orphan_holds

    def phrase(first):
        x = out.states[:, first * 16:(first + 4) * 16]
        return drop_orphan_holds(x, torch.zeros_like(x, dtype=torch.bool))

    assert torch.equal(phrase(8), phrase(2))
    for k in range(4):
        assert torch.equal(out.requested_density[:, 8 + k], out.requested_density[:, 2 + k])
    # bars of different phrases are not copies of each other
    assert not torch.equal(bar(out.states, 6, 16), bar(out.states, 2, 16))
    # follow_form=False: the form only conditions
    free = songs_model.generate(form=form, seed=3, refine_rounds=0, follow_form=False)
    assert not torch.equal(bar(free.states, 8, 16), bar(free.states, 2, 16))
    # refinement varies a `variation` share of the repeats, the rest follows the first phrase
    shares = []
    for variation in (0.0, 0.25, 1.0):
        varied = songs_model.generate(form=form, seed=3, refine_rounds=1, refine_ratio=0.3, variation=variation)
        shares.append(float((varied.melody[:, 8 * 16:12 * 16] == varied.melody[:, 2 * 16:6 * 16]).float().mean()))
    assert shares[0] == 1.0 and 0.5 < shares[1] < 1.0 and shares[2] < shares[1]
    with pytest.raises(ValueError, match="variation"):
        songs_model.generate(form=form, variation=1.5)


def test_short_forms_with_many_repeats_decode(songs_model):
    """A repeat follows its source's mask, so after an iteration fewer tokens can be masked
    than the schedule keeps (the shipped model raised "num_to_mask must lie in [0, masked
    positions]" for A2A2 at seeds 4 and 5); the schedule keeps at most what is masked."""
    for form, again in (("A2A2", 2), ("A1A1A1A1", 1), ("A1B1A1B1A1", 2), ("A2A2B2A2", 2)):
        for seed in range(6):
            out = songs_model.generate(form=form, seed=seed, refine_rounds=0, num_iterations=[8] * len(songs_model.config.levels))
            assert torch.equal(out.melody[:, again * 16:(again + 1) * 16], out.melody[:, :16]), (form, seed)


def test_form_sets_the_bars_and_must_agree(songs_model):
    assert songs_model.generate(form="A2B2", seed=0).states.shape[1] == 64
    with pytest.raises(ValueError, match="has 4 bars, the piece 5"):
        songs_model.generate(5, form="A2B2", seed=0)
    with pytest.raises(Exception, match="bad part"):
        songs_model.generate(form="A2B", seed=0)
    with pytest.raises(Exception, match="key"):
        songs_model.generate(4, key="H:maj", seed=0)


def test_forms_and_keys_are_drawn_from_the_training_songs_when_not_given(songs_model):
    songs_model.generation_config.form_prior = ["i4A8B8o4", "A4A4B8"]
    songs_model.generation_config.minor_share = 0.5
    try:
        forms = {songs_model.generate(12, seed=s).form for s in range(8)}
        assert forms == {"i4A8", "A4A4B4"}
        out = songs_model.generate(12, seed=0, key="Eb:min")
        assert out.key == "Eb:min"
        keys = {songs_model.generate(4, seed=s).key for s in range(8)}
        assert len(keys) > 1 and all(k.endswith((":maj", ":min")) for k in keys)
    finally:
        del songs_model.generation_config.form_prior, songs_model.generation_config.minor_share
    assert songs_model.generate(4, seed=0).form is None  # no forms kept: none followed


def test_given_chords_and_density_win_over_the_forms_repeats(songs_model):
    """A repeat of the form copies its first phrase only where the caller's chords for the two
    bars agree, and their given densities fall in one class; else the bar follows what was
    given for it (with the drawn forms of a songs model, chords like C G F Am were otherwise
    played as the first phrase's C G, and density curves were followed with r 0.78)."""
    from fractalmidi import controls

    bar = lambda x, b: x[:, b * 16:(b + 1) * 16]  # noqa: E731
    same = songs_model.generate(form="A2A2", chords=controls.chords("C G C G"), seed=1, refine_rounds=0)
    assert all(torch.equal(bar(same.states, 2 + k), bar(same.states, k)) for k in range(2))
    out = songs_model.generate(form="A2A2", chords=controls.chords("C G C Am"), seed=1, refine_rounds=0)
    assert torch.equal(bar(out.states, 2), bar(out.states, 0))  # C and C: still a repeat
    assert not torch.equal(bar(out.states, 3), bar(out.states, 1))  # Am is not G
    # a density curve too: bars asked for a different density than their source follow it
    loose = songs_model.generate(form="A2A2", structure={"density": [1.0, 1.0, 1.0, 3.0]}, seed=1, refine_rounds=0)
    assert torch.equal(bar(loose.states, 2), bar(loose.states, 0))
    assert not torch.equal(bar(loose.states, 3), bar(loose.states, 1))


def test_the_key_follows_the_given_chords_and_melody_when_not_given(songs_model):
    from fractalmidi import controls
    from fractalmidi.form_fractalmidi import estimate_key

    scale = np.zeros(12)
    scale[[0, 2, 4, 5, 7, 9, 11]] = 1.0
    scale[[0, 4, 7]] += 1.0  # the tonic triad weighs more
    assert estimate_key(scale) == (0, "maj")
    assert estimate_key(np.roll(scale, 7)) == (7, "maj")
    minor = np.zeros(12)
    minor[[9, 11, 0, 2, 4, 5, 8]] = 1.0  # A harmonic minor
    minor[[9, 0, 4]] += 1.0
    assert estimate_key(minor) == (9, "min")
    assert estimate_key(np.ones(12)) is None and estimate_key(np.zeros(12)) is None
    songs_model.generation_config.minor_share = 0.5
    try:
        for seed in range(3):  # a key is drawn for free generation, inferred from what is given
            assert songs_model.generate(4, seed=seed, chords=controls.chords("Am Dm E Am")).key == "A:min"
            assert songs_model.generate(4, seed=seed, chords=controls.chords("Eb Ab Bb Eb")).key == "Eb:maj"
        g_major = [67, 69, 71, 72, 74, 76, 78, 79, 74, 71, 67, 62, 67, 71, 74, 67]
        melody = np.array([[p, 4 * k, 4 * k + 4, 90] for k, p in enumerate(g_major)])
        assert songs_model.generate(4, seed=0, melody=melody).key == "G:maj"
        assert songs_model.generate(4, seed=0, chords=controls.chords("C F G C"), key="A:min").key == "A:min"
    finally:
        del songs_model.generation_config.minor_share


def test_a_given_melody_is_kept_note_for_note_and_the_piano_plays_around_it(songs_model, tmp_path):
    from fractalmidi.midi_io import read_song_midi

    melody = np.array([[60, 0, 4, 90], [62, 4, 8, 91], [64, 8, 16, 92], [100, 16, 20, 80], [36, 24, 40, 70]])
    out = songs_model.generate(4, melody=melody, seed=2, num_samples=2)
    for i in range(2):
        assert out.melody_notes(i).tolist() == melody.tolist()
        piano, mel = out.to_song(i)
        notes = {tuple(n) for n in out.to_piece(i).notes[:, :3].tolist()}
        assert {tuple(n) for n in melody[:, :3].tolist()} <= notes  # laid into the roll exactly
        assert not {tuple(n[:2]) for n in piano.notes.tolist()} & {tuple(n[:2]) for n in melody.tolist()}
    path = out.to_midi(tmp_path / "a.mid")
    song = read_song_midi(path)
    assert dict(song.tracks)["Melody"].notes[:, :3].tolist() == melody[:, :3].tolist()
    with pytest.raises(ValueError, match="outside the piece"):
        songs_model.generate(2, melody=np.array([[60, 40, 44, 90]]), seed=0)


def test_a_generated_melody_sounds_in_the_piece(songs_model):
    out = songs_model.generate(4, seed=5)
    mel = out.melody_notes()
    assert len(mel)
    notes = {tuple(n) for n in out.to_piece().notes[:, :2].tolist()}
    assert all((p, s) in notes for p, s in mel[:, :2].tolist())


def test_a_prompts_melody_is_context_and_the_new_bars_get_their_own(songs_model):
    """Continuing a song: the prompt's melody covers its bars (melody_bars), the melody level
    reads it and writes the new bars' melody; the result's melody is the two together."""
    from fractalmidi.piece import Piece

    melody = np.array([[60, 0, 4, 90], [62, 4, 8, 90], [64, 8, 16, 90], [65, 16, 32, 90]])
    prompt = Piece(np.array([[48, 0, 16, 80], [43, 16, 32, 80]]), np.array([0, 16, 32]), np.array([[4, 4], [4, 4]]),
                   np.array([0]), np.array([120.0]), 4, (21, 108))
    out = songs_model.generate(4, prompt=prompt, melody=melody, melody_bars=[(0, 2)], seed=1)
    notes = out.melody_notes()
    assert notes[notes[:, 1] < 32].tolist() == melody.tolist()
    assert (notes[:, 1] >= 32).any()  # the new bars have a melody of their own (an untrained model's)
    # the melody level read the given line as its tokens there (onset of 60 = 2 + 60 - 48)
    assert out.melody[0, :5].tolist() == [14, 1, 1, 1, 16]
    with pytest.raises(ValueError, match="melody_bars 1-9"):
        songs_model.generate(4, melody=melody, melody_bars=[(0, 9)], seed=1)


def test_chord_and_melody_levels_decode_in_random_order(songs_model, monkeypatch):
    """Confidence order collapses the token levels (the tonic chord, rests and holds win every
    ranking); they keep masked in random order (`token_remask_mode`), the others by confidence."""
    from fractalmidi import generation_fractalmidi as G

    seen = []
    real = G.choose_tokens_to_keep_masked

    def spy(confidence, masked, count, generator, mode):
        seen.append((confidence.shape[1], mode))
        return real(confidence, masked, count, generator, mode)

    monkeypatch.setattr(G, "choose_tokens_to_keep_masked", spy)
    songs_model.generate(2, seed=0)
    modes = {}
    for length, mode in seen:
        modes.setdefault(length, set()).add(mode)
    # structure 2 x 2 bars, chords 8 beats, harmony 8 patches, melody and notes 32 steps
    assert modes[4] == {"confidence"} and modes[8] == {"random", "confidence"}
    assert modes[32] == {"random", "confidence"}
    token_levels = [i for i, name in enumerate(songs_model.config.levels) if name in ("chords", "melody", "rhythm")]
    assert [m for n, m in seen].count("random") == sum(songs_model.config.num_iterations[i] for i in token_levels)
