"""One set of limits for every way in: `generate` (the Python API) and the front-ends'
parsers (`controls`) refuse the same values, naming the field, the value and the range."""

import math
from pathlib import Path

import pytest

from fractalmidi import InputError, controls
from fractalmidi import limits_fractalmidi as limits

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    import torch

    from fractalmidi import FractalMIDIConfig, FractalMIDIModel

    torch.manual_seed(0)
    return FractalMIDIModel(FractalMIDIConfig.from_json_file(ROOT / "hub_configs" / "tiny.json")).eval()


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308, -0.5, 4.01, "x", True])
def test_generate_refuses_density_the_model_cannot_represent(tiny, value):
    with pytest.raises(ValueError, match=r"density curve, bar 2:"):
        tiny.generate(num_bars=2, seed=0, structure={"density": [0.5, value]})


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e308, 5.0, 1001.0])
def test_generate_refuses_tempo_outside_10_to_1000_bpm(tiny, value):
    with pytest.raises(ValueError, match=r"tempo curve, bar 1:.*10.0-1000.0 BPM"):
        tiny.generate(num_bars=2, seed=0, structure={"tempo": [value, 100.0]})


def test_generate_takes_the_edges_of_the_ranges(tiny):
    out = tiny.generate(num_bars=2, seed=0, structure={"density": [0.0, 4.0], "tempo": [10.0, 1000.0]},
                        temperature=limits.TEMPERATURE[1], num_iterations=[1, 1, 1], refine_rounds=0)
    assert out.to_piece().num_bars == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_iterations=[100000, 1, 1]), r"num_iterations\[0\] \(structure\) 100000 is outside the allowed range 1-64"),
        (dict(refine_rounds=-5), "refine_rounds -5 is outside the allowed range 0-8"),
        (dict(refine_rounds=2.5), "refine_rounds must be a whole number"),
        (dict(temperature=math.inf), "temperature must be a finite number"),
        (dict(guidance_scale=1e308), r"guidance_scale 1e\+308 is outside the allowed range 0.0-10.0"),
        (dict(seed=2**70), "seed 1180591620717411303424 is outside the allowed range"),
        (dict(num_samples=10**9), "num_samples 1000000000 is outside the allowed range 1-64"),
        (dict(time_signatures=(5, 0)), "the denominator must be one of 1, 2, 4, 8, 16, 32"),
        (dict(num_bars=10**9), "more than this model's max_bars"),
    ],
)
def test_generate_bounds_every_argument(tiny, kwargs, message):
    kwargs = dict(dict(num_bars=2), **kwargs)
    with pytest.raises(ValueError, match=message):
        tiny.generate(**kwargs)


@pytest.mark.parametrize(
    "parse, value, message",
    [
        (controls.temperature, "abc", "temperature must be a number, got 'abc'"),
        (controls.temperature, None, "temperature must be a number in 0.1-2.0, got None"),
        (controls.temperature, "2.5", "temperature 2.5 is outside the allowed range 0.1-2.0"),
        (controls.guidance_scale, "nan", "cfg (guidance scale) must be a finite number"),
        (controls.seed, 2.0**70, "seed 1180591620717411303424 is outside the allowed range 0-9223372036854775807"),
        (controls.seed, math.nan, "seed must be a whole number"),
        (controls.seed, "1.5", "seed must be a whole number"),
        (controls.bars, "abc", "bars must be a whole number, got 'abc'"),
        (controls.top_p, 0, "top-p 0.0 is outside the allowed range (0.0, 1.0]"),
        (controls.time_signature, "5/0", "time signature 5/0: the denominator must be one of"),
        (controls.time_signature, "33/4", "time signature numerator 33 is outside the allowed range 1-32"),
        (controls.bar_ranges, "3-1", "bar range 3-1"),
    ],
)
def test_front_end_parsers_name_the_field_and_the_range(parse, value, message):
    with pytest.raises(InputError) as e:
        parse(value)
    assert message in str(e.value)


def test_curve_parser_uses_the_models_density_range(tmp_path):
    assert controls.curve("0.5,,8", "density", density_max=8.0) == [0.5, None, 8.0]
    with pytest.raises(InputError, match="density curve, bar 3: 8.0 is outside the allowed range 0.0-4.0"):
        controls.curve("0.5,,8", "density")
    (tmp_path / "c.json").write_text("[100, null, 1e999]")  # json reads 1e999 as inf
    with pytest.raises(InputError, match="tempo curve, bar 3: must be a finite number"):
        controls.curve(str(tmp_path / "c.json"), "tempo")
    with pytest.raises(InputError, match="at most 1024 bars"):
        controls.curve(",".join(["1"] * 1025), "density")


def test_messages_stay_short_and_printable_for_huge_values():
    """A 5000-digit integer cannot even be printed by str(); the message still names the field."""
    with pytest.raises(InputError, match=r"seed \(an integer of about \d+ digits\) is outside the allowed range"):
        controls.seed(10**5000)
    with pytest.raises(InputError) as e:
        controls.temperature("x" * 100_000)
    assert str(e.value).startswith("temperature must be a number, got 'xxx") and len(str(e.value)) < 120
