"""The model and the Hub (`fractalmidi.hub`): checkpoints hold no code; `import fractalmidi` makes
AutoConfig / AutoModel load them (without importing torch itself); `save_with_code` writes the
folder that `fractalmidi push` uploads, and that folder loads with `trust_remote_code=True` in a
process where this package cannot be imported. Nothing here reaches the network: fresh
processes get HF_HUB_OFFLINE=1 and their own HF_HOME, uploads go to a stand-in for HfApi."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fractalmidi import FractalMIDIConfig, FractalMIDIModel, hub
from fractalmidi.cli import main
from fractalmidi.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "fractalmidi-pop909-songs"
TINY = ROOT / "hub_configs" / "tiny.json"
CODE = {"configuration_fractalmidi.py", "modeling_fractalmidi.py", "generation_fractalmidi.py",
        "sampling.py", "tokens_fractalmidi.py", "limits_fractalmidi.py", "form_fractalmidi.py"}


def fresh_python(code: str, tmp_path: Path, package_importable: bool = True) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter, offline, with an HF cache of its own. The package comes
    from this tree (not whatever an editable install points at), or, with
    `package_importable=False`, cannot be imported at all."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    if package_importable:
        env["PYTHONPATH"] = str(ROOT)
    else:  # sys.path without this tree, and a finder that refuses the package (an editable
        # install would find it through its own finder otherwise)
        code = (
            "import importlib.abc, sys\n"
            "class NoFractalMIDI(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'fractalmidi':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, NoFractalMIDI())\n"
            f"sys.path[:] = [p for p in sys.path if p not in ('', {str(ROOT)!r})]\n"
            "try:\n"
            "    import fractalmidi\n"
            "except ModuleNotFoundError:\n"
            "    pass\n"
            "else:\n"
            "    raise SystemExit('fractalmidi is importable')\n"
        ) + code
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)


def tensors(result) -> dict:
    """The tensors of a generation result (a dataclass / ModelOutput), by field name."""
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
            if isinstance(getattr(result, f.name), torch.Tensor)}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny, untrained model folder as the package's save_pretrained writes it, plus a model
    card, a log and a stale code file from an older layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny")
    FractalMIDIModel(FractalMIDIConfig.from_json_file(TINY)).save_pretrained(path)
    (path / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    (path / "training_log.jsonl").write_text('{"step": 1}\n')
    (path / "modeling_old.py").write_text("raise RuntimeError('stale code')\n")
    return path


# ----------------------------------------------------------------------------- registration
def test_import_is_cheap_and_auto_model_loads_the_shipped_model(tmp_path):
    """`import fractalmidi` imports neither torch nor transformers, yet AutoConfig / AutoModel
    know the model afterwards, without trust_remote_code."""
    out = fresh_python(
        "import sys\n"
        "import fractalmidi\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import fractalmidi is not cheap'\n"
        "from transformers import AutoConfig, AutoModel\n"
        f"config = AutoConfig.from_pretrained({str(SHIPPED)!r})\n"
        "assert type(config).__module__ == 'fractalmidi.configuration_fractalmidi', type(config)\n"
        f"model = AutoModel.from_pretrained({str(SHIPPED)!r})\n"
        "assert type(model) is fractalmidi.FractalMIDIModel, type(model)\n"
        "print('ok')\n", tmp_path)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.mark.parametrize("imports", [
    "from transformers import AutoModel\nimport fractalmidi",  # transformers first: registered at import
    "import transformers\nimport fractalmidi\nAutoModel = transformers.AutoModel",  # lazy attribute
    "import fractalmidi.modeling_fractalmidi\nfrom transformers import AutoModel",  # the model module alone
])
def test_auto_model_finds_the_model_whatever_the_import_order(tmp_path, imports):
    out = fresh_python(
        f"{imports}\n"
        f"model = AutoModel.from_pretrained({str(SHIPPED)!r})\n"
        "assert type(model).__module__ == 'fractalmidi.modeling_fractalmidi', type(model)\n"
        "print('ok')\n", tmp_path)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_save_pretrained_writes_no_code(tmp_path, tiny_dir):
    files = {p.name for p in tiny_dir.iterdir()} - {"README.md", "training_log.jsonl", "modeling_old.py"}
    assert not any(f.endswith(".py") for f in files) and "model.safetensors" in files, files
    assert "auto_map" not in json.loads((tiny_dir / "config.json").read_text())


# ----------------------------------------------------------------------------- save with code
def test_save_with_code_writes_the_code_beside_the_weights(tmp_path, tiny_dir):
    files = hub.save_with_code(tiny_dir, tmp_path / "repo")
    assert set(files) == CODE | {"config.json", "model.safetensors", "README.md", "training_log.jsonl"} | (
        {"generation_config.json"} & set(files)), files
    for name in CODE:  # the package's files, as they are now
        assert (tmp_path / "repo" / name).read_bytes() == (ROOT / "fractalmidi" / name).read_bytes(), name
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_fractalmidi.FractalMIDIConfig",
                                  "AutoModel": "modeling_fractalmidi.FractalMIDIModel"}
    assert (tmp_path / "repo" / "README.md").read_text() == (tiny_dir / "README.md").read_text()
    a = FractalMIDIModel.from_pretrained(tiny_dir).state_dict()
    b = FractalMIDIModel.from_pretrained(tmp_path / "repo").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the registration for code holds for that save only: the package's saves stay code-free
    assert FractalMIDIModel._auto_class is None and FractalMIDIConfig._auto_class is None
    FractalMIDIModel.from_pretrained(tiny_dir).save_pretrained(tmp_path / "again")
    assert not any(p.suffix == ".py" for p in (tmp_path / "again").iterdir())


def test_the_pushed_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    """What Hub users get: the shipped model saved with its code, loaded with
    trust_remote_code=True in a process that cannot import fractalmidi, generates the same
    notes as the package's model for the same seed."""
    hub.save_with_code(SHIPPED, tmp_path / "repo")
    expected = tensors(FractalMIDIModel.from_pretrained(SHIPPED).eval().generate(num_bars=2, seed=5))
    out = fresh_python(
        "import dataclasses, sys, numpy as np, torch\n"
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(tmp_path / 'repo')!r}, trust_remote_code=True).eval()\n"
        "assert type(model).__module__.startswith('transformers_modules.'), type(model).__module__\n"
        "result = model.generate(num_bars=2, seed=5)\n"
        "arrays = {f.name: getattr(result, f.name).numpy() for f in dataclasses.fields(result)\n"
        "          if isinstance(getattr(result, f.name), torch.Tensor)}\n"
        f"np.savez({str(tmp_path / 'remote.npz')!r}, **arrays)\n"
        "assert not any(m.split('.')[0] == 'fractalmidi' for m in sys.modules)\n"
        "print('ok')\n", tmp_path, package_importable=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    remote = np.load(tmp_path / "remote.npz")
    assert set(remote.files) == set(expected) and "states" in expected
    for name, t in expected.items():
        assert np.array_equal(remote[name], t.numpy()), name
    assert expected["states"].sum() > 0  # notes were made


def test_save_with_code_refuses_what_is_not_a_model(tmp_path, tiny_dir):
    with pytest.raises(InputError, match="no such folder"):
        hub.save_with_code(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no model there"):
        hub.save_with_code(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(InputError, match="model_type is 'gpt2'"):
        hub.save_with_code(tmp_path / "other", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(InputError, match="not an empty folder"):
        hub.save_with_code(tiny_dir, tmp_path / "out")


# ----------------------------------------------------------------------------- push
class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls, and what the uploaded folder held."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        FakeHfApi.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        folder = Path(folder_path)
        kw["files"] = sorted(p.name for p in folder.iterdir())
        kw["auto_map"] = json.loads((folder / "config.json").read_text()).get("auto_map")
        self.calls.append(("upload_folder", repo_id, kw))

        class Commit:
            commit_url = f"https://huggingface.co/{repo_id}/commit/0123abc"
        return Commit()


def test_push_uploads_the_model_with_its_code(tmp_path, tiny_dir, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    code = main(["push", str(tiny_dir), "someone/tiny-fractalmidi", "--private", "--revision", "v1",
                 "--commit-message", "first"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == "https://huggingface.co/someone/tiny-fractalmidi/commit/0123abc", err
    (c1, repo, kw1), (c2, _, kw2), (c3, _, kw3) = FakeHfApi.calls
    assert (c1, c2, c3) == ("create_repo", "create_branch", "upload_folder") and repo == "someone/tiny-fractalmidi"
    assert kw1["private"] is True and kw1["exist_ok"] is True and kw2["branch"] == "v1"
    assert kw3["revision"] == "v1" and kw3["commit_message"] == "first" and kw3["delete_patterns"] == ["*.py"]
    assert set(kw3["files"]) >= CODE | {"config.json", "model.safetensors", "README.md", "training_log.jsonl"}
    assert "modeling_old.py" not in kw3["files"] and kw3["auto_map"]["AutoModel"] == "modeling_fractalmidi.FractalMIDIModel"
    # defaults: no branch, the repo's visibility left to the Hub
    assert main(["push", str(tiny_dir), "tiny-fractalmidi"]) == 0
    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder"]
    assert FakeHfApi.calls[0][2]["private"] is None and FakeHfApi.calls[1][2]["revision"] is None


@pytest.mark.parametrize("argv, message", [
    (["push", "{missing}", "someone/model"], r"missing: no such folder"),
    (["push", "{tiny}", "someone/bad name"], r"'someone/bad name': not a Hub repository id"),
    (["push", "{tiny}", "a/b/c"], r"'a/b/c': not a Hub repository id"),
    (["push", "{tiny}", "someone/model"], r"upload to someone/model failed: .*offline"),
])
def test_push_refuses_in_one_line(tmp_path, tiny_dir, monkeypatch, capsys, argv, message):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the real HfApi, offline
    argv = [a.format(missing=tmp_path / "missing", tiny=tiny_dir) for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("fractalmidi: error: ") and re.search(message, err), err
