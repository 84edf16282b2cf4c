"""The autoregressive baseline: tokenizer round trip on real songs, KV cache, sampling, sizing."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fractalmidi import read_midi
from benchmarks.baseline import (
    BAR,
    BOS,
    EOS,
    ARBaselineConfig,
    ARBaselineModel,
    ARTokenWindows,
    KVCache,
    NoteEventTokenizer,
    ar_config_matching,
    ar_num_parameters,
    collate_tokens,
    count_parameters,
    train_ar,
)
from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.data import piece_to_row

HUB = Path(__file__).resolve().parent.parent / "hub_configs"


def tiny_ar(**kw) -> ARBaselineModel:
    torch.manual_seed(0)
    config = ARBaselineConfig(hidden_size=32, num_layers=2, num_heads=2, **kw)
    return ARBaselineModel(config).eval()


def read_song(song):
    return read_midi(song / f"{song.name}.mid", beats=song / "beat_midi.txt")[0]


# ----------------------------------------------------------------------------- tokenizer
def test_round_trip_on_real_songs(pop909_song):
    tok = NoteEventTokenizer(ARBaselineConfig())
    piece = read_song(pop909_song)
    ids = tok.encode(piece)
    assert ids[0] == BOS and ids[-1] == EOS and ids.count(BAR) == piece.num_bars
    assert tok.count_tokens(piece) == len(ids) - 2
    back = tok.decode(ids)
    # bars, time signatures, pitches and onsets exactly
    np.testing.assert_array_equal(back.bar_starts, piece.bar_starts)
    np.testing.assert_array_equal(back.time_signatures, piece.time_signatures)
    a, b = piece.notes, back.notes
    assert len(a) == len(b)
    np.testing.assert_array_equal(b[:, :2], a[:, :2])
    # durations up to the cap, velocities and tempi to their class
    np.testing.assert_array_equal(b[:, 2] - b[:, 1], np.minimum(a[:, 2] - a[:, 1], tok.max_duration))
    assert np.abs(b[:, 3] - a[:, 3]).max() <= math.ceil(127 / tok.config.velocity_bins)
    half_class = (math.log(240.0) - math.log(30.0)) / (tok.config.tempo_bins - 1) / 2
    within = np.abs(np.log(back.bar_tempo()) - np.log(np.clip(piece.bar_tempo(), 30.0, 240.0)))
    assert within.max() <= half_class + 1e-6
    assert tok.encode(back) == ids  # a decoded piece encodes to the same tokens


def test_token_names_and_refusals():
    tok = NoteEventTokenizer(ARBaselineConfig())
    assert tok.token_name(BAR) == "Bar"
    assert tok.token_name(tok.offset["Pitch"]) == "Pitch_21"
    assert tok.token_name(tok.offset["Duration"]) == "Duration_1"
    assert "TimeSig_4/4" in {tok.token_name(tok.offset["TimeSig"] + i) for i in range(tok.sizes["TimeSig"])}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.kind_of(tok.vocab_size)
    from fractalmidi import Piece

    with pytest.raises(ValueError, match="time signature 13/4"):
        tok.encode(Piece.from_bars([(13, 4)]))


def test_decode_tolerates_any_sequence():
    tok = NoteEventTokenizer(ARBaselineConfig())
    rng = np.random.default_rng(0)
    for _ in range(20):
        piece = tok.decode(rng.integers(0, tok.vocab_size, size=300))
        assert piece.num_bars >= 1
    assert tok.decode([]).num_bars == 1
    # a pitch before any Bar opens an implicit 4/4 bar at position 0 with defaults
    p = tok.decode([BOS, tok.offset["Pitch"] + 39, EOS, BAR, BAR])
    assert p.num_bars == 1 and p.notes.tolist() == [[60, 0, 1, 64]]


# ----------------------------------------------------------------------------- the network
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("window", [0, 8])
def test_kv_cache_equals_full_recompute(impl, window):
    model = tiny_ar(attention_window=window)
    model.config._attn_implementation = impl
    ids = torch.randint(4, model.tokenizer.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(ids).logits  # (2, 30, V)
        cache = KVCache(model.config, 2, 4, torch.float32, "cpu")  # small: it must grow
        prefill = model(ids[:, :10], cache=cache).logits
        steps = [model(ids[:, i : i + 1], cache=cache).logits for i in range(10, 30)]
    cached = torch.cat([prefill] + steps, dim=1)
    assert cache.length == 30 and cache.capacity >= 30
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_positions():
    model = tiny_ar()
    ids = torch.randint(4, model.tokenizer.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    batch = collate_tokens([ids[0].tolist(), ids[0, :7].tolist()])
    assert batch["labels"][1, 7:].eq(-100).all()
    with torch.inference_mode():
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        alone = model(ids[:, :7]).logits
    torch.testing.assert_close(out[1, :7], alone[0], atol=1e-5, rtol=1e-5)


def _bar_friendly(model):
    """Logits that make Bar likely and EOS impossible (a hook on the head), so an untrained model
    opens bars quickly."""
    bias = torch.zeros(model.tokenizer.vocab_size)
    bias[BAR], bias[EOS] = 3.0, -math.inf
    model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    return model


def test_generate_stops_at_the_bar_count_and_is_seeded():
    model = _bar_friendly(tiny_ar())
    a = model.generate(num_bars=3, seed=7, max_new_tokens=2000)
    b = model.generate(num_bars=3, seed=7, max_new_tokens=2000)
    c = model.generate(num_bars=3, seed=8, max_new_tokens=2000)
    assert a.stopped_by == "bars" and int(a.num_bars[0]) == 3
    assert torch.equal(a.sequences, b.sequences) and not torch.equal(a.sequences, c.sequences)
    assert a.to_piece().num_bars == 3
    # one network pass per sampled token; the Bar that would open bar 4 is sampled, not kept
    assert a.num_forward_passes == a.num_sampled == int(a.num_generated[0]) + 1
    assert a.sequences.shape[1] == 1 + int(a.num_generated[0])


def test_generate_exact_token_count_and_batch():
    model = tiny_ar()
    out = model.generate(num_tokens=50, seed=0, num_samples=2, temperature=0.7)
    assert out.sequences.shape == (2, 51) and out.num_forward_passes == 50 and out.stopped_by == "num_tokens"
    with pytest.raises(ValueError, match="temperature"):
        model.generate(num_tokens=5, temperature=0)
    with pytest.raises(ValueError, match="exactly one"):
        model.generate(num_bars=2, num_tokens=5)


def test_save_and_load(tmp_path):
    model = tiny_ar(attention_window=16)
    model.save_pretrained(tmp_path)
    again = ARBaselineModel.from_pretrained(tmp_path).eval()
    assert again.config.attention_window == 16
    ids = torch.tensor([[BOS, BAR, 50, 120]])
    with torch.inference_mode():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)


# ----------------------------------------------------------------------------- sizing and training
@pytest.mark.parametrize("name", ["tiny", "small"])
def test_param_matching_within_ten_percent(name):
    config = FractalMIDIConfig.from_json_file(str(HUB / f"{name}.json"))
    ar = ar_config_matching(config)
    target, ours = count_parameters(config), ar_num_parameters(ar)
    assert abs(ours - target) / target <= 0.10
    assert ar.velocity_bins == config.velocity_bins and ar.max_bar_len == config.max_bar_len
    with torch.device("meta"):
        assert count_parameters(ARBaselineModel(ar)) == ours  # the formula is the model's count


def test_training_windows_and_loss(pop909_dir):
    songs = sorted(d for d in pop909_dir.iterdir() if (d / "beat_midi.txt").is_file())[:2]
    rows = [piece_to_row(read_song(s), s.name, f"{s.name}/{s.name}.mid") for s in songs]
    model = tiny_ar()
    windows = ARTokenWindows(rows, model.tokenizer, num_bars=2, max_shift=3, seed=0, max_length=256)
    assert windows[(0, 0)] == windows[(0, 0)] and windows[(0, 0)] != windows[(1, 0)]
    first = windows[(0, 1)]
    assert first[0] == BOS and first.count(BAR) <= 2
    batch = collate_tokens([windows[(0, i)] for i in range(len(windows))])
    with torch.no_grad():
        loss = model(**batch).loss
    assert abs(float(loss) - math.log(model.tokenizer.vocab_size)) < 1.0  # about uniform at the start
    losses = train_ar(model, rows, steps=30, batch_size=2, num_bars=2, lr=3e-3, warmup_steps=5, log=None)
    assert np.mean(losses[-5:]) < losses[0] - 0.5
