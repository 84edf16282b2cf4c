"""One home for the front-ends' controls (`fractalmidi.controls`): the default model, loading
it, and the decoding defaults the command line, the web app and the OSC server start at."""

import ast
import json
import shutil
from pathlib import Path

import pytest

from fractalmidi import InputError, controls

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "fractalmidi-pop909-small"
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
    for key in controls.DECODING_FIELDS:
        assert defaults[key] == shipped[key], key
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
