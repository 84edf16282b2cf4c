"""One home for the front-ends' controls (`fractalmidi.controls`): the default model, loading
it, and the decoding defaults the command line, the web app and the OSC server start at."""

import ast
import json
import shutil
from pathlib import Path

import pytest

from fractalmidi import InputError, controls

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "fractalmidi-pop909-songs"
FRONT_ENDS = {"cli": ROOT / "fractalmidi" / "cli.py", "app": ROOT / "app.py", "osc": ROOT / "fractalmidi" / "web" / "osc.py"}


def test_model_dir_is_the_argument_then_the_environment_then_the_shipped_model(monkeypatch, tmp_path):
    monkeypatch.delenv(controls.MODEL_ENV, raising=False)
    assert controls.model_dir() == controls.DEFAULT_MODEL == SHIPPED
    monkeypatch.setenv(controls.MODEL_ENV, str(tmp_path))
    assert controls.model_dir() == tmp_path
    assert controls.model_dir(SHIPPED) == SHIPPED


def test_decoding_defaults_come_from_the_generation_config(tmp_path):
    shipped = json.loads((SHIPPED / "generation_config.json").read_text())
    defaults = controls.decoding_defaults(SHIPPED)
    assert set(defaults) == set(controls.DECODING_FIELDS)
    for key in controls.DECODING_FIELDS:  # the saved file's, else generate's own defaults
        assert defaults[key] == shipped.get(key, {"follow_form": True, "variation": 0.25}.get(key)), key
    # a folder whose generation config says otherwise: the controls follow it
    folder = tmp_path / "m"
    shutil.copytree(SHIPPED, folder)
    (folder / "generation_config.json").write_text(json.dumps(dict(shipped, temperature=1.3, guidance_scale=2.0)))
    assert controls.decoding_defaults(folder)["temperature"] == 1.3
    assert controls.decoding_defaults(folder)["guidance_scale"] == 2.0
    model = controls.load_model(folder)
    assert controls.decoding_defaults(model) == controls.decoding_defaults(folder)


def test_a_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no model there"):
        controls.load_model(tmp_path / "none")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: not valid JSON"):
        controls.model_limits(tmp_path)


def test_the_app_and_the_command_line_start_at_the_models_defaults():
    import app
    from fractalmidi.cli import _generation_kwargs, build_parser

    assert app.DEFAULTS == controls.decoding_defaults(SHIPPED)
    kw = _generation_kwargs(build_parser().parse_args(["generate", "--bars", "2"]), 2)
    # None: generate takes the model's generation config (the CLI used to force cfg 1.0, the app 1.5)
    assert kw["guidance_scale"] is None and kw["temperature"] is None and kw["top_p"] is None
    args = build_parser().parse_args(["generate", "--bars", "2", "--guidance-scale", "2.5"])
    assert _generation_kwargs(args, 2)["guidance_scale"] == 2.5


def test_the_osc_server_starts_at_the_parameters_it_is_given():
    from fractalmidi.web.osc import FractalOSCServer, OSCParams

    server = FractalOSCServer(lambda params: None, port=0, params=OSCParams(temperature=1.1, cfg=2.0))
    assert server.params.temperature == 1.1 and server.params.cfg == 2.0
    with pytest.raises(ValueError, match="temperature 9.0 is outside"):
        FractalOSCServer(lambda params: None, port=0, params=OSCParams(temperature=9.0))


# who may import whom: the app runs the OSC server (its public class), nothing else crosses
ALLOWED = {("app", "osc")}


def test_no_front_end_imports_another_or_private_names():
    """The command line, the app and the OSC server share `controls`, never each other's
    parsers or private names (the app used to import the CLI's `_curve`)."""
    for name, path in FRONT_ENDS.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                others = [m for m in FRONT_ENDS if m != name and (name, m) not in ALLOWED]
                assert not any(module.split(".")[-1] == o for o in others), f"{path.name} imports {module}"
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.name} imports private names {private} from {module}"


# ----------------------------------------------------------------------------- form, key, chords
def test_form_parses_the_annotations_style_within_max_bars():
    phrases = controls.form("i4A8B8A8B8o4")
    assert [(p.letter, p.bars) for p in phrases] == [("i", 4), ("A", 8), ("B", 8), ("A", 8), ("B", 8), ("o", 4)]
    assert controls.form(phrases) == phrases  # parsed phrases pass through
    assert sum(p.bars for p in controls.form("A128" * 8)) == controls.MAX_BARS
    for bad, message in [("", "empty form"), ("i4A", "bad part 'A'"), ("4A", "bad part"), ("A0", "0 bars"),
                         ("A8 B8", "bad part"), ("A128" * 8 + "B1", f"more than {controls.MAX_BARS} bars"),
                         (8, "expected text")]:
        with pytest.raises(InputError, match=message):
            controls.form(bad)
    with pytest.raises(InputError, match="at most 16 bars"):
        controls.form("A8B8o4", max_bars=16)


@pytest.mark.parametrize("text, expected", [
    ("G:maj", (7, "maj", "G:maj")), ("Eb:min", (3, "min", "Eb:min")), ("C#:min", (1, "min", "C#:min")),
    ("G", (7, "maj", "G:maj")), ("Gm", (7, "min", "G:min")), ("G major", (7, "maj", "G:maj")),
    ("e minor", (4, "min", "E:min")), ("Bbm", (10, "min", "Bb:min")), ("bb", (10, "maj", "Bb:maj")),
    (" F# : minor ", (6, "min", "F#:min")), ("CM", (0, "maj", "C:maj")), ("Gb:maj", (6, "maj", "Gb:maj")),
])
def test_key_accepts_the_usual_spellings(text, expected):
    assert controls.key(text) == expected


@pytest.mark.parametrize("bad", ["", "H:maj", "G:dorian", "Gx", "C##", "G minor major", "Cmaj7", "1"])
def test_key_refuses_other_text_in_one_line(bad):
    with pytest.raises(InputError, match=r"^key: .* is not a key \(e\.g\. G:maj") as e:
        controls.key(bad)
    assert "\n" not in str(e.value)


def test_chords_one_symbol_per_bar_several_joined_by_commas():
    assert controls.chords("C,G Am F/A G7") == [
        [(0, "maj", 0), (7, "maj", 7)], [(9, "min", 9)], [(5, "maj", 9)], [(7, "7", 7)]]
    assert controls.chords("C:maj A:min7 Bb:maj7 F#m7b5 N C:maj/3 Cmaj7 Bdim G7sus4 Dsus2 Caug Am6") == [
        [(0, "maj", 0)], [(9, "min7", 9)], [(10, "maj7", 10)], [(6, "hdim7", 6)], [(-1, "N", -1)],
        [(0, "maj", 4)], [(0, "maj7", 0)], [(11, "dim", 11)], [(7, "sus4(b7)", 7)], [(2, "sus2", 2)],
        [(0, "aug", 0)], [(9, "min6", 9)]]
    # extensions outside the vocabulary reduce to its nearest quality, as the annotations' do
    assert controls.chords("G9 Cadd9 Am9") == [[(7, "7", 7)], [(0, "maj", 0)], [(9, "min7", 9)]]
    from fractalmidi.structure import QUALITIES

    for bar in controls.chords("C Am G7 F/A C:maj A:min7 Bb:maj7 F#m7b5 Ebmaj7 C#m"):
        for root, quality, bass in bar:
            assert quality in QUALITIES and 0 <= root < 12 and 0 <= bass < 12


@pytest.mark.parametrize("text, message", [
    ("C G Hm F", "chords, bar 3: 'Hm' is not a chord symbol (e.g. C, Am, G7, F/A, C:maj, A:min7)"),
    ("C,Xq", "chords, bar 1: 'Xq' is not a chord symbol"),
    ("C F/H", "chords, bar 2: 'F/H' is not a chord symbol"),
    ("am", "chords, bar 1: 'am' is not a chord symbol"),
    ("C C:blue", "chords, bar 2: 'C:blue' is not a chord symbol"),
    ("C,,G", "chords, bar 1: an empty chord"),
    ("", "chords: empty"),
    ("C " * (controls.MAX_BARS + 1), f"at most {controls.MAX_BARS} bars"),
    (",".join(["C"] * (controls.MAX_CHORDS_PER_BAR + 1)), "chords, bar 1: 17 chords"),
])
def test_chords_name_the_bad_symbol_and_its_bar(text, message):
    with pytest.raises(InputError) as e:
        controls.chords(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bars_follow_from_the_form_or_the_chords_and_must_agree():
    assert controls.bars_from() is None
    assert controls.bars_from(form="i4A8B8o4") == 24
    assert controls.bars_from(chords="C,G Am F G") == 4
    assert controls.bars_from(bars="16") == 16
    assert controls.bars_from(form="A2B2", chords="C G Am F", bars=4) == 4
    assert controls.bars_from(form=controls.form("A2"), chords=controls.chords("C G")) == 2  # parsed ones too
    with pytest.raises(InputError, match="bars disagree: the form has 24, the chords have 4; they must agree"):
        controls.bars_from(form="i4A8B8o4", chords="C G Am F")
    with pytest.raises(InputError, match="bars disagree: the chords have 4, bars is 8"):
        controls.bars_from(chords="C G Am F", bars=8)
    with pytest.raises(InputError, match="chords, bar 2: 'Hm'"):  # each is checked before comparing
        controls.bars_from(form="A2", chords="C Hm")
    with pytest.raises(InputError, match="bars"):
        controls.bars_from(bars=0)
