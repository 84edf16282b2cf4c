"""FractalMIDIConfig: defaults, validation with clear messages, save / load, hub_configs."""

import json
from pathlib import Path

import pytest

from fractalmidi.configuration_fractalmidi import FractalMIDIConfig

HUB_CONFIGS = Path(__file__).resolve().parents[1] / "hub_configs"
SIZES = ["tiny", "small", "base", "large"]


def test_defaults_are_the_small_cpu_model():
    c = FractalMIDIConfig()
    assert c.model_type == "fractalmidi"
    assert c.levels == ["structure", "harmony", "notes"]
    assert c.num_iterations == [8, 8, 3] and c.iterations_for("harmony") == 8
    assert c.default_temperature == 0.8 and c.default_top_p == 0.9
    assert c.num_pitches == 88 and c.use_harmony
    assert c.refine_ratio == 0.3 and c.pitch_kernel == 12 and c.mask_schedule == "cosine"


def test_save_and_load_round_trip(tmp_path):
    c = FractalMIDIConfig(steps_per_beat=8, max_bar_len=96, levels=["structure", "notes"], num_iterations=[6, 2])
    c.save_pretrained(tmp_path)
    d = FractalMIDIConfig.from_pretrained(tmp_path)
    assert d.to_dict() == c.to_dict()
    assert d.levels == ["structure", "notes"] and not d.use_harmony
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "fractalmidi"


@pytest.mark.parametrize("size", SIZES)
def test_hub_configs_load_and_validate(size):
    c = FractalMIDIConfig.from_json_file(HUB_CONFIGS / f"{size}.json")
    assert c.to_dict() == FractalMIDIConfig(**json.loads((HUB_CONFIGS / f"{size}.json").read_text())).to_dict()


def test_hub_config_sizes_grow():
    cs = [FractalMIDIConfig.from_json_file(HUB_CONFIGS / f"{s}.json") for s in SIZES]
    for a, b in zip(cs, cs[1:]):
        for level in ("structure", "harmony", "note"):
            assert getattr(a, f"{level}_hidden_size") <= getattr(b, f"{level}_hidden_size")
    assert FractalMIDIConfig.from_json_file(HUB_CONFIGS / "small.json").to_dict() == FractalMIDIConfig().to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps_per_beat=0), "steps_per_beat = 0 is outside the allowed range 1-96"),
        (dict(steps_per_beat="4"), "steps_per_beat must be an integer"),
        (dict(pitch_low=60, pitch_high=50), "pitch_high = 50 is outside the allowed range 60-127"),
        (dict(levels=["notes"], num_iterations=[3]), "levels = ['notes']"),
        (dict(levels=["harmony", "structure", "notes"]), "levels ="),
        (dict(num_iterations=[8, 4]), "one count >= 1 per level"),
        (dict(num_iterations=[8, 0, 3]), "one count >= 1 per level"),
        (dict(note_num_heads=3), "note_hidden_size = 128 is not divisible by note_num_heads = 3"),
        (dict(note_window=15), "note_window = 15 must be even"),
        (dict(tempo_min=200.0, tempo_max=100.0), "tempo_max = 100.0 is outside the allowed range 200.0-1000.0"),
        (dict(mask_schedule="exp"), "mask_schedule = 'exp'"),
        (dict(remask_mode="best"), "remask_mode = 'best'"),
        (dict(refine_ratio=1.5), "refine_ratio = 1.5 is outside the allowed range 0.0-1.0"),
        (dict(cond_drop_prob=float("nan")), "cond_drop_prob must be a finite number"),
        (dict(pitch_kernel=100), "pitch_kernel = 100 is outside the allowed range 1-88"),
    ],
)
def test_bad_values_are_refused_with_the_field_and_range(kwargs, message):
    with pytest.raises(ValueError) as e:
        FractalMIDIConfig(**kwargs)
    assert message in str(e.value)
