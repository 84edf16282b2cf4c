"""FractalMIDIModel: losses, attention implementations, save / load, and `generate`'s promises
(seeded, temperature and guidance act, inpainting keeps the rest, passes independent of length).
All on the CPU with hub_configs/tiny.json."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fractalmidi import FractalMIDIConfig, FractalMIDIModel, read_midi
from fractalmidi.data import collate, dense_example
from fractalmidi.metrics import pitch_entropy
from fractalmidi.generation_fractalmidi import GenerationRun
from fractalmidi.modeling_fractalmidi import WindowedSelfAttention
from transformers import GenerationConfig

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT / "tests" / "data" / "pop909" / "001"
TINY = ROOT / "hub_configs" / "tiny.json"


def tiny_config(**kw) -> FractalMIDIConfig:
    return FractalMIDIConfig(**{**json.loads(TINY.read_text()), **kw})


def batch_of(*pieces):
    b = collate([dense_example(p) for p in pieces])
    return {k: torch.from_numpy(v) for k, v in b.items() if isinstance(v, np.ndarray)}


@pytest.fixture(scope="module")
def song():
    piece, _ = read_midi(SONG / "001.mid", beats=SONG / "beat_midi.txt")
    return piece


@pytest.fixture(scope="module")
def trained(song):
    """A tiny model overfitted on one 8-bar crop of a real song: (model, losses per step)."""
    torch.manual_seed(0)
    model = FractalMIDIModel(tiny_config(cond_drop_prob=0.2))
    batch = batch_of(song.crop_bars(8, 16), song.crop_bars(16, 24))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(80):
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    return model.eval(), losses


# ------------------------------------------------------------------------------ training
def test_loss_is_finite_and_has_every_part(song):
    torch.manual_seed(0)
    model = FractalMIDIModel(tiny_config())
    out = model(**batch_of(song.crop_bars(0, 4), song.crop_bars(4, 10)))  # different lengths: padding
    assert torch.isfinite(out.loss)
    assert set(out.losses) == {"tempo", "density", "structure", "harmony", "notes", "velocity"}
    expected = out.losses["structure"] + out.losses["harmony"] + out.losses["notes"] + out.losses["velocity"]
    assert torch.allclose(out.loss, expected)
    out0 = model(**batch_of(song.crop_bars(0, 4)), structure_weight=0.0)
    assert torch.allclose(out0.loss, out0.losses["harmony"] + out0.losses["notes"] + out0.losses["velocity"])


def test_loss_falls_when_overfitting_one_crop(trained):
    _, losses = trained
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_model_without_harmony_level(song):
    model = FractalMIDIModel(tiny_config(levels=["structure", "notes"], num_iterations=[2, 2]))
    out = model(**batch_of(song.crop_bars(0, 4)))
    assert torch.isfinite(out.loss) and "harmony" not in out.losses
    g = model.eval().generate(num_bars=2, seed=0)
    assert g.harmony is None and g.to_piece().num_bars == 2


def test_bars_longer_than_max_bar_len_are_refused(song):
    model = FractalMIDIModel(tiny_config(max_bar_len=12))
    with pytest.raises(ValueError, match="16 steps is longer than max_bar_len = 12"):
        model(**batch_of(song.crop_bars(0, 2)))
    with pytest.raises(ValueError, match="longer than max_bar_len"):
        model.generate(num_bars=2, time_signatures=(4, 4))


# ------------------------------------------------------------------------------ attention
def test_eager_and_sdpa_agree(song):
    torch.manual_seed(0)
    model = FractalMIDIModel(tiny_config()).eval()
    for p in model.parameters():  # leave adaLN-Zero's identity start so attention matters
        torch.nn.init.normal_(p, std=0.05)
    batch = batch_of(song.crop_bars(0, 6), song.crop_bars(6, 9))
    outs = {}
    for impl in ("eager", "sdpa"):
        model.config._attn_implementation = impl
        torch.manual_seed(1)
        outs[impl] = model(**batch).losses
    for k in outs["eager"]:
        assert torch.allclose(outs["eager"][k], outs["sdpa"][k], atol=1e-5), k


def test_windowed_attention_stays_inside_its_window():
    cfg = tiny_config()
    torch.manual_seed(0)
    attn = WindowedSelfAttention(cfg, 32, 2, window=8, shifted=False).eval()
    x = torch.randn(1, 24, 32)
    valid = torch.ones(1, 24, dtype=torch.bool)
    y = attn(x, valid)
    x2 = x.clone()
    x2[:, 16:] += 1.0  # change the third window only
    y2 = attn(x2, valid)
    assert torch.allclose(y[:, :16], y2[:, :16])
    assert not torch.allclose(y[:, 16:], y2[:, 16:])
    shifted = WindowedSelfAttention(cfg, 32, 2, window=8, shifted=True).eval()
    shifted.load_state_dict(attn.state_dict())
    y3, y4 = shifted(x, valid), shifted(x2, valid)
    assert not torch.allclose(y3[:, 12:16], y4[:, 12:16])  # shifted windows cross the border


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash_attention_2 needs a CUDA GPU and flash-attn")
def test_flash_attention_matches_sdpa_on_gpu(song):  # pragma: no cover - no GPU in CI
    model = FractalMIDIModel(tiny_config()).to("cuda", torch.bfloat16).eval()
    a = model.generate(num_bars=4, seed=0).states
    model.config._attn_implementation = "flash_attention_2"
    b = model.generate(num_bars=4, seed=0).states
    assert (a == b).float().mean() > 0.95


# ------------------------------------------------------------------------------ save / load
def test_save_load_and_auto_model_give_identical_generations(tmp_path, trained):
    """save_pretrained writes config and weights, no code; the package's classes load them,
    through AutoModel too (registered by importing fractalmidi, no trust_remote_code). The Hub
    folder with the code, loaded without the package: tests/test_hub.py."""
    from transformers import AutoModel

    model, _ = trained
    model.save_pretrained(tmp_path / "m")
    files = set(os.listdir(tmp_path / "m"))
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl", ".py")) for f in files)
    assert "auto_map" not in json.loads((tmp_path / "m" / "config.json").read_text())
    expected = model.generate(num_bars=4, seed=11).states
    again = FractalMIDIModel.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(again.generate(num_bars=4, seed=11).states, expected)
    auto = AutoModel.from_pretrained(tmp_path / "m").eval()
    assert type(auto) is FractalMIDIModel
    assert torch.equal(auto.generate(num_bars=4, seed=11).states, expected)


# ------------------------------------------------------------------------------ generate
def test_same_seed_same_piece_other_seed_other_piece(trained):
    model, _ = trained
    a = model.generate(num_bars=4, seed=3)
    b = model.generate(num_bars=4, seed=3)
    c = model.generate(num_bars=4, seed=4)
    assert torch.equal(a.states, b.states) and torch.equal(a.bar_tempo, b.bar_tempo)
    assert not torch.equal(a.states, c.states)
    with pytest.raises(TypeError, match="generator"):  # the seed is the one way to seed
        model.generate(num_bars=4, generator=torch.Generator().manual_seed(3))


def test_higher_temperature_gives_higher_note_entropy(trained):
    model, _ = trained

    def mean_entropy(t):
        return np.mean([pitch_entropy(model.generate(num_bars=4, seed=s, temperature=t).to_piece()) for s in range(4)])

    low, high = mean_entropy(0.3), mean_entropy(1.5)
    assert high > low + 0.3, (low, high)


def test_forward_passes_do_not_grow_with_length(trained):
    model, _ = trained
    short = model.generate(num_bars=16, seed=0)
    long = model.generate(num_bars=256, seed=0)
    assert short.num_forward_passes == long.num_forward_passes
    assert long.to_piece().num_bars == 256
    guided = model.generate(num_bars=16, seed=0, guidance_scale=2.0)
    assert guided.num_forward_passes == short.num_forward_passes  # cond + uncond are one batched pass


def test_user_structure_is_kept(trained):
    model, _ = trained
    density = [0.25, 0.5, 1.0, 0.75]
    tempo = [80.0, 90.0, None, 120.0]
    g = model.generate(num_bars=4, seed=0, structure={"density": density, "tempo": tempo})
    assert torch.allclose(g.requested_density[0], torch.tensor(density))
    assert g.bar_tempo[0, 0].item() == 80.0 and g.bar_tempo[0, 3].item() == 120.0
    piece = g.to_piece()
    assert np.allclose(piece.bar_tempo()[[0, 1, 3]], [80.0, 90.0, 120.0])


def test_time_signatures_and_intermediates(trained):
    model, _ = trained
    g = model.generate(time_signatures=[(3, 4), (6, 8), (7, 8)], seed=0, return_intermediates=True)
    piece = g.to_piece()
    assert piece.bar_lengths.tolist() == [12, 12, 14]
    levels = [step["level"] for step in g.intermediates]
    assert levels[0] == "structure" and levels[-1] == "notes" and "harmony" in levels


def test_inpainting_keeps_every_note_outside_the_bars(trained, song):
    model, _ = trained
    prompt = song.crop_bars(0, 16)
    g = model.generate(prompt=prompt, inpaint_bars=[(4, 8), (10, 12)], seed=0)
    out = g.to_piece()
    s = prompt.bar_starts

    def outside(notes):
        start = notes[:, 1]
        inside = ((start >= s[4]) & (start < s[8])) | ((start >= s[10]) & (start < s[12]))
        return notes[~inside]

    assert np.array_equal(outside(prompt.notes), outside(out.notes))
    assert np.array_equal(out.bar_starts, prompt.bar_starts)
    assert np.array_equal(out.tempo_bpm, prompt.tempo_bpm)


def test_continuation_keeps_the_whole_prompt(trained, song):
    model, _ = trained
    prompt = song.crop_bars(0, 8)
    out = model.generate(prompt=prompt, num_bars=12, seed=0).to_piece()
    assert out.num_bars == 12
    assert np.array_equal(out.bar_starts[:9], prompt.bar_starts)
    before = out.notes[out.notes[:, 1] < prompt.num_steps]
    assert np.array_equal(before, prompt.notes)


def test_to_midi_writes_a_readable_file(trained, tmp_path):
    model, _ = trained
    g = model.generate(num_bars=4, seed=0)
    path = g.to_midi(tmp_path / "x.mid")
    back, _ = read_midi(path)
    assert back.num_bars == 4 and np.array_equal(back.notes, g.to_piece().notes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_bars=0), "num_bars must be a whole number >= 1"),
        (dict(num_bars=4, temperature=0), "temperature 0.0 is outside the allowed range 0.1-2.0"),
        (dict(num_bars=4, guidance_scale=-1), "guidance_scale -1.0 is outside the allowed range 0.0-10.0"),
        (dict(num_bars=4, refine_ratio=1.5), "refine_ratio 1.5 is outside the allowed range 0.0-1.0"),
        (dict(num_bars=4, num_iterations=[2, 2]), "one count >= 1 per level"),
        (dict(num_bars=4, structure={"density": [0.5]}), "has 1 values for 4 bars"),
        (dict(num_bars=4, structure={"loudness": [1] * 4}), "unknown key 'loudness'"),
        (dict(num_bars=4, time_signatures=(5, 3)), "time signature 5/3: the denominator must be one of"),
        (dict(num_bars=4, time_signatures=[(4, 4)] * 3), "num_bars = 4 but 3 time signatures"),
        (dict(num_bars=4, inpaint_bars=[(0, 2)]), "inpaint_bars needs a prompt"),
    ],
)
def test_bad_generate_arguments(trained, kwargs, message):
    model, _ = trained
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.generate(**kwargs)


def test_inpaint_range_outside_the_piece_is_refused(trained, song):
    model, _ = trained
    with pytest.raises(ValueError, match="inpaint bars 7-20 lie outside the piece's bars 1-8"):
        model.generate(prompt=song.crop_bars(0, 8), inpaint_bars=[(6, 20)])


def test_orphan_holds_become_silence():
    from fractalmidi.modeling_fractalmidi import drop_orphan_holds

    s = torch.tensor([[0, 2, 2, 1, 2, 2, 0, 2, 1, 0]]).T[None]  # (1, T, 1): silent, held, held, onset, ...
    fixed = torch.zeros_like(s, dtype=torch.bool)
    out = drop_orphan_holds(s, fixed)
    assert out[0, :, 0].tolist() == [0, 0, 0, 1, 2, 2, 0, 0, 1, 0]
    fixed[0, 1, 0] = True  # a kept (prompt) cell stays as it is
    assert drop_orphan_holds(s, fixed)[0, 1, 0] == 2


def test_following_the_structure_realises_the_requested_density(trained):
    model, _ = trained
    from fractalmidi.metrics import density_adherence

    density = [0.25, 1.5, 0.5, 2.0, 0.75, 1.0, 0.25, 1.75]
    follow = model.generate(num_bars=8, seed=0, structure={"density": density}).to_piece()
    free = model.generate(num_bars=8, seed=0, structure={"density": density}, follow_structure=False).to_piece()
    a, b = density_adherence(density, follow.bar_density()), density_adherence(density, free.bar_density())
    assert a["pearson_r"] > 0.9 and a["mae"] < 0.3, a
    assert a["mae"] < b["mae"]


def test_the_plan_counts_the_notes_the_sampler_must_start_again():
    """A kept hold whose note start is sampled again must restart there unless a kept sounding
    cell lies at most MAX_BRIDGE steps before it with no kept silence between (the sampler then
    bridges); the density plan counts those restarts as onsets in place, so pieces are not
    denser than asked (they were 0.13 onsets per step denser with three iterations)."""
    from fractalmidi.modeling_fractalmidi import restarted_notes
    from fractalmidi.sampling import MAX_BRIDGE, sample_note_states

    T, P = 8, 4
    states = torch.zeros(1, T, P, dtype=torch.long)
    active = torch.zeros(1, T, P, dtype=torch.bool)
    states[0, 5, 0] = 2  # pitch 0: a kept hold at step 5, steps 0-4 sampled now: a restart at 4
    active[0, :5, 0] = True
    states[0, 2, 1], states[0, 3, 1], states[0, 5, 1] = 1, 2, 2  # pitch 1: kept note at 2-3, step 4 sampled, kept hold at 5
    active[0, 4, 1] = True
    states[0, 1, 2], states[0, 2:4, 2] = 1, 0  # pitch 2: kept note at 1, kept silence at 2-3, step 4 sampled
    states[0, 5, 2] = 2
    active[0, 4, 2] = True
    states[0, 6, 3] = 2  # pitch 3: the cell before the kept hold is kept too: nothing sampled
    states[0, 5, 3] = 1
    got = restarted_notes(states, active)
    expected = torch.zeros_like(active)
    expected[0, 4, 0] = expected[0, 4, 2] = True
    assert torch.equal(got, expected)
    # what the sampler does: at the cells counted a note starts, elsewhere it is bridged
    probs = torch.zeros(1, T, P, 3)
    probs[..., 0] = 1.0  # the model asks for silence everywhere
    out, _ = sample_note_states(probs, active, states, torch.Generator().manual_seed(0))
    assert out[0, 4, 0] == 1 and out[0, 4, 2] == 1 and out[0, 4, 1] == 2
    assert int(((out == 1) & active).sum()) == int(got.sum())
    assert MAX_BRIDGE >= 1


def test_a_loaded_model_reads_a_prompt_like_the_saved_one(tmp_path, trained, song):
    """Nothing the model computes with may be left out of the checkpoint (a non-persistent
    buffer once came back as uninitialised memory after from_pretrained)."""
    model, _ = trained
    model.save_pretrained(tmp_path / "m")
    loaded = FractalMIDIModel.from_pretrained(tmp_path / "m").eval()
    prompt = song.crop_bars(0, 8)
    a = model.generate(prompt=prompt, inpaint_bars=[(2, 4)], seed=5)
    b = loaded.generate(prompt=prompt, inpaint_bars=[(2, 4)], seed=5)
    assert torch.equal(a.harmony, b.harmony) and torch.equal(a.states, b.states)
    for name, t in loaded.state_dict().items():
        assert torch.isfinite(t.float()).all(), name


def test_training_after_generating_in_the_same_process(song):
    """Tables cached while generating (inference mode) must not break a later backward pass."""
    model = FractalMIDIModel(tiny_config(note_window=8, harmony_window=4))
    model.eval().generate(num_bars=3, seed=0)
    out = model.train()(**batch_of(song.crop_bars(0, 3)))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


SHIPPED = ROOT / "checkpoints" / "fractalmidi-pop909-songs"


def test_the_shipped_model_holds_no_code():
    """Model folders hold config, generation config, weights and model card: the package's
    classes load them. `fractalmidi push` adds the code for the Hub (tests/test_hub.py)."""
    assert not list((ROOT / "checkpoints").rglob("*.py"))
    assert "auto_map" not in json.loads((SHIPPED / "config.json").read_text())


def test_the_shipped_model_loads_and_generates():
    model = FractalMIDIModel.from_pretrained(SHIPPED).eval()
    assert model.config.model_type == "fractalmidi" and model.num_parameters() > 9e6
    piece = model.generate(num_bars=4, seed=0).to_piece()
    assert piece.num_bars == 4 and len(piece.notes) > 0


# ------------------------------------------------------------------ cached conditions, bf16
def test_precomputed_modulations_give_the_same_outputs(trained):
    """generate computes each level's adaLN parameters once (`condition`) and passes them to
    every iteration: the outputs must be those of the plain forward."""
    from fractalmidi.generation_fractalmidi import _condition_runs

    model, _ = trained
    torch.manual_seed(0)
    N, T, P = 2, 48, model.config.num_pitches
    states = torch.randint(0, 3, (N, T, P))
    velocity = torch.randint(0, 128, (N, T, P))
    masked = torch.rand(N, T) < 0.5
    position = (torch.arange(T) % 16).expand(N, T)
    d_parent = model.notes.cond_proj.in_features
    parent = torch.randn(N, T // 4, d_parent).repeat_interleave(4, dim=1)  # runs of 4 equal rows
    drop = torch.tensor([False, True])
    valid = torch.ones(N, T, dtype=torch.bool)
    with torch.no_grad():
        plain = model.notes(states, velocity, masked, position, parent, drop, valid)
        mods = model.notes.condition(parent, drop)
        cached = model.notes(states, velocity, masked, position, None, None, valid, modulations=mods)
        runs = _condition_runs(model.notes, parent, drop)
        lean = model.notes(states, velocity, masked, position, None, None, valid, modulations=runs, with_velocity=False)
    for a, b in zip(plain, cached):
        torch.testing.assert_close(a, b)
    for a, b in zip(mods, runs):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(lean[1], plain[1])
    assert lean[2] is None
    torch.testing.assert_close(model.notes.velocity_logits(lean[0]), plain[2])


def test_guidance_with_cached_conditions_matches_separate_passes(trained):
    """The batched cond + uncond pass (modulations computed once for both halves) gives what
    two plain passes, one with the condition and one with the null condition, give."""
    model, _ = trained
    torch.manual_seed(1)
    N, H = 1, 16
    pcs = (torch.rand(N, H, 12) < 0.3).float()
    masked = torch.rand(N, H) < 0.5
    position = (torch.arange(H) * 4 % 16).expand(N, H)
    parent = torch.randn(N, H, model.config.structure_hidden_size)
    valid = torch.ones(N, H, dtype=torch.bool)
    run = GenerationRun(model, None, dict(guidance_scale=2.0), 0, 1, None, False, False)
    with torch.no_grad():
        (_, cond), (_, uncond) = run.guided_pass(model.harmony, dict(position=position, parent=parent, valid=valid), pcs, masked)
        _, ref_c = model.harmony(pcs, masked, position, parent, torch.tensor([False]), valid)
        _, ref_u = model.harmony(pcs, masked, position, parent, torch.tensor([True]), valid)
    torch.testing.assert_close(cond, ref_c)
    torch.testing.assert_close(uncond, ref_u)
    assert run.passes == 1  # one sequential pass for both


def test_generate_in_bfloat16(trained):
    """The model is dtype-clean: loaded in bf16 (from_pretrained(dtype=torch.bfloat16), or
    .to(torch.bfloat16)) it generates a valid piece, and its logits stay close to float32's."""
    import copy

    model, _ = trained
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    result = bf16.generate(num_bars=4, seed=0)
    piece = result.to_piece()
    assert piece.num_bars == 4 and len(piece.notes) > 0
    assert result.num_forward_passes == model.generate(num_bars=4, seed=0).num_forward_passes
    batch = batch_of(*[model.generate(num_bars=4, seed=s).to_piece() for s in range(2)])
    torch.manual_seed(0)
    with torch.no_grad():
        loss32 = model(**batch).loss
    torch.manual_seed(0)
    with torch.no_grad():
        loss16 = bf16(**{k: v for k, v in batch.items()}).loss.float()
    assert loss16 == pytest.approx(loss32.item(), rel=0.05)


def test_default_top_p_comes_from_the_config(trained):
    model, _ = trained
    old = model.generation_config.top_p
    try:
        model.generation_config.top_p = 0.5
        a = model.generate(num_bars=4, seed=3).to_piece()
        b = model.generate(num_bars=4, seed=3, top_p=0.5).to_piece()
        c = model.generate(num_bars=4, seed=3, generation_config=GenerationConfig(top_p=1.0)).to_piece()
    finally:
        model.generation_config.top_p = old
    assert np.array_equal(a.notes, b.notes)
    assert not np.array_equal(a.notes, c.notes)
    with pytest.raises(ValueError, match="default_top_p"):
        tiny_config(default_top_p=0.0)


def test_two_threads_share_one_model(trained):
    """generate keeps its state in the call, not on the model: two threads generating at the
    same time with one model give the pieces two sequential calls give."""
    import threading

    model, _ = trained
    kwargs = [dict(num_bars=4, seed=5, return_intermediates=True), dict(num_bars=6, seed=6, guidance_scale=2.0)]
    sequential = [model.generate(**kw) for kw in kwargs]
    results = [None, None]
    start = threading.Barrier(2)

    def work(i):
        start.wait()
        results[i] = model.generate(**kwargs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(sequential, results):
        assert torch.equal(a.states, b.states) and torch.equal(a.velocity, b.velocity)
        assert a.num_forward_passes == b.num_forward_passes
    assert len(results[0].intermediates) == len(sequential[0].intermediates) and results[1].intermediates is None


def test_generation_config_holds_the_decoding_defaults(trained, tmp_path):
    """save_pretrained writes generation_config.json with the decoding defaults; from_pretrained
    reads it; a generation_config.json without them (older checkpoints) falls back to the model
    config's default_temperature / default_top_p / num_iterations / refine_*."""
    model, _ = trained
    gen = model.generation_config
    c = model.config
    assert (gen.temperature, gen.top_p, gen.guidance_scale, gen.num_iterations, gen.refine_ratio, gen.refine_rounds,
            gen.follow_structure) == (c.default_temperature, c.default_top_p, 1.0, c.num_iterations, 0.3, 1, True)
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert saved["num_iterations"] == c.num_iterations and saved["temperature"] == c.default_temperature
    saved.update(temperature=1.2, num_iterations=[2, 2, 1])
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps(saved))
    loaded = FractalMIDIModel.from_pretrained(tmp_path / "m")
    assert loaded.generation_config.temperature == 1.2 and loaded.generation_config.num_iterations == [2, 2, 1]
    assert loaded.generate(num_bars=2, seed=0).num_forward_passes == 2 + 1 + 2 + 1 + 1 + 1 + 1
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"_from_model_config": True}))
    old = FractalMIDIModel.from_pretrained(tmp_path / "m")
    assert old.generation_config.temperature == model.config.default_temperature
    assert old.generation_config.num_iterations == list(model.config.num_iterations)
    with pytest.raises(TypeError, match="cfg"):  # the guidance scale is `guidance_scale`
        model.generate(num_bars=2, seed=0, cfg=2.0)
    shown = []
    model.generate(num_bars=2, seed=0, progress=lambda *args: shown.append(args))
    total = sum(c.num_iterations) + 1 + 1 + 2 * c.refine_rounds  # + the passes conditioning the levels below
    assert [s[1] for s in shown] == list(range(1, total + 1)) and {s[2] for s in shown} == {total}


def test_local_head_starts_as_no_change_and_reaches_the_logits():
    """The note level's local head (per pitch, over neighbouring steps) is zero-initialised, in a
    new model and for a checkpoint saved without it; it adds to every cell's state logits."""
    torch.manual_seed(0)
    model = FractalMIDIModel(tiny_config()).eval()
    assert model.notes.local_head is not None and not model.notes.local_head.weight.any()
    N, T, P = 1, 32, model.config.num_pitches
    args = (torch.randint(0, 3, (N, T, P)), torch.randint(0, 128, (N, T, P)), torch.rand(N, T) < 0.5,
            (torch.arange(T) % 16)[None], torch.randn(N, T, model.notes.cond_proj.in_features),
            torch.zeros(N, dtype=torch.bool), torch.ones(N, T, dtype=torch.bool))
    with torch.no_grad():
        _, base, _ = model.notes(*args)
        model.notes.local_head.bias.copy_(torch.tensor([0.0, 0.0, 0.7]))  # x LOCAL_GAIN 10
        _, shifted, _ = model.notes(*args)
    torch.testing.assert_close(shifted[..., 2] - base[..., 2], torch.full((N, T, P), 7.0), rtol=0, atol=1e-4)
    without = FractalMIDIModel(tiny_config(note_local_kernel=0))
    assert without.notes.local_head is None
    with pytest.raises(ValueError, match="note_local_kernel = 4: must be odd"):
        tiny_config(note_local_kernel=4)


def test_a_checkpoint_without_the_local_head_loads_with_it_switched_off(tmp_path):
    """Models saved before the local head existed load with a zero head: the same predictions."""
    torch.manual_seed(0)
    old = FractalMIDIModel(tiny_config(note_local_kernel=0)).eval()
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["note_local_kernel"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    new = FractalMIDIModel.from_pretrained(tmp_path).eval()
    assert new.notes.local_head is not None and not new.notes.local_head.weight.any()
    a, b = old.generate(num_bars=4, seed=0), new.generate(num_bars=4, seed=0)
    assert torch.equal(a.states, b.states)
