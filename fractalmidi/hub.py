"""The model and the Hugging Face Hub: Auto-class registration, and pushing a model with its code.

Checkpoint folders hold no Python: `save_pretrained` writes the config, the generation config,
the weights and the model card. Two ways to load one:

- with this package: `import fractalmidi`, then `AutoModel.from_pretrained(path)`. The
  package's classes answer AutoConfig / AutoModel for `model_type: "fractalmidi"`.
- without it, from the Hub: `fractalmidi push MODEL_DIR REPO_ID` (`push`) uploads the model
  with its code (`save_with_code`: transformers' `register_for_auto_class` copies the model
  files and writes `auto_map` into config.json), so `AutoModel.from_pretrained(repo_id,
  trust_remote_code=True)` runs that code.

Registering needs transformers' auto modules, whose import pulls in torch: registering in
`import fractalmidi` itself would take it from about 0.2 s to 3-4 s on this 2-core machine
(`python -X importtime`), for the grid, MIDI and metrics users too. So `import fractalmidi`
installs a post-import hook instead (a `sys.meta_path` finder, standard library only): the
registration runs right after transformers' `configuration_auto` / `modeling_auto` finish
importing (it then imports transformers' `modeling_utils`, which `from_pretrained` needs anyway,
and this package's model files, 0.1 s), and at once if they are already imported. Any
`AutoConfig` / `AutoModel` call comes after those imports, so it finds the classes registered;
a script that never touches transformers pays nothing. The hook removes itself when done.

This module imports only the standard library at import time.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from .errors import InputError

MODEL_TYPE = "fractalmidi"
# files of a model folder that are not copied beside the code: Python (the code is written
# fresh from the package), weights other than what save_pretrained writes (pickles, shards)
_NOT_COPIED = (".py", ".pyc", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".safetensors", ".index.json")


# ----------------------------------------------------------------------------- registration
_CONFIGURATION_AUTO = "transformers.models.auto.configuration_auto"
_MODELING_AUTO = "transformers.models.auto.modeling_auto"
# the package's modules behind the two classes
_OWN = tuple(f"{__package__}.{m}" for m in ("configuration_fractalmidi", "modeling_fractalmidi", "generation_fractalmidi",
                                            "sampling", "tokens_fractalmidi", "limits_fractalmidi"))
_registered: set[str] = set()  # "config", "model"
_finished: set[str] = set()  # watched modules whose code has run (importlib still flags them as initialising)


def register_auto_classes() -> None:
    """Register FractalMIDIConfig with AutoConfig and FractalMIDIModel with AutoModel (for
    `model_type: "fractalmidi"`). Imports torch and transformers; `import fractalmidi` has it
    done when transformers' auto classes are imported (see the module docstring)."""
    _register(force=True)


def _initialising(name: str) -> bool:
    module = sys.modules.get(name)
    return (module is not None and name not in _finished
            and bool(getattr(getattr(module, "__spec__", None), "_initializing", False)))


def _busy() -> bool:
    """A module the registration needs is halfway through its import (one importing another):
    importing ours now could see it half-made. The hook retries when the next one finishes."""
    return any(_initialising(name) for name in list(sys.modules)
               if name == "transformers" or name.startswith("transformers.") or name in _OWN)


def _register(force: bool = False) -> None:
    """Register what transformers' imported auto modules allow (`force`: import them)."""
    if not force and _busy():
        return
    try:
        if "config" not in _registered and (force or _CONFIGURATION_AUTO in sys.modules):
            from transformers.models.auto.configuration_auto import AutoConfig

            from .configuration_fractalmidi import FractalMIDIConfig

            AutoConfig.register(MODEL_TYPE, FractalMIDIConfig, exist_ok=True)
            _registered.add("config")
        if "model" not in _registered and (force or _MODELING_AUTO in sys.modules):
            from transformers.models.auto.modeling_auto import AutoModel

            from .configuration_fractalmidi import FractalMIDIConfig
            from .modeling_fractalmidi import FractalMIDIModel

            AutoModel.register(FractalMIDIConfig, FractalMIDIModel, exist_ok=True)
            _registered.add("model")
    except ImportError as e:  # the next watched import retries; say why, as a broken model file is no cycle
        if force:
            raise
        warnings.warn(f"fractalmidi: not registered with AutoConfig / AutoModel yet: {e}", RuntimeWarning, stacklevel=2)
    if {"config", "model"} <= _registered:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterAfterImport)]


class _RegisterAfterImport:
    """A post-import hook (as in PEP 369 / wrapt): finds the watched modules with the other
    finders and wraps their loader so that `_register` runs once their code has run. It removes
    itself when both classes are registered; the modules keep their own loader."""

    WATCHED = frozenset((_CONFIGURATION_AUTO, _MODELING_AUTO, "transformers.configuration_utils",
                         "transformers.modeling_utils") + _OWN)

    def find_spec(self, name, path=None, target=None):
        if name not in self.WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader:
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader
        self.loader.exec_module(module)
        module.__spec__.loader = self.loader
        _finished.add(module.__name__)
        _register()


def install_registration_hook() -> None:
    """Called by `import fractalmidi`: register now if transformers' auto classes are already
    imported, and install the hook for what is not registered yet."""
    _register()
    if not {"config", "model"} <= _registered and not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


# ----------------------------------------------------------------------------- saving with code
def check_model_dir(model_dir) -> Path:
    """A FractalMIDI model folder (config.json with model_type "fractalmidi", model.safetensors),
    or an InputError naming what is wrong."""
    path = Path(model_dir)
    if not path.is_dir():
        raise InputError(f"{path}: no such folder (give a model folder: config.json and model.safetensors)")
    config = path / "config.json"
    if not config.is_file():
        raise InputError(f"{path}: no model there (expected config.json and model.safetensors)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise InputError(f"{config}: not a valid config ({e})") from None
    if model_type != MODEL_TYPE:
        raise InputError(f"{config}: model_type is {model_type!r}, not {MODEL_TYPE!r}")
    if not (path / "model.safetensors").is_file():
        raise InputError(f"{path}: no model.safetensors (the weights)")
    return path


def check_repo_id(repo_id: str) -> str:
    """A Hub model repository id ("namespace/name" or "name"), or an InputError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        shown = repo_id if len(repo_id) <= 60 else repo_id[:57] + "..."
        raise InputError(f"{shown!r}: not a Hub repository id (NAMESPACE/NAME or NAME: letters, digits, "
                         "'-', '_', '.', not starting or ending with '-' or '.', at most 96 characters)") from None
    return repo_id


def save_with_code(model_dir, out_dir) -> list[str]:
    """Write the model in `model_dir` to `out_dir` as it goes to the Hub: `save_pretrained` with
    the model's code (the classes registered for AutoConfig / AutoModel, so their files and
    their relative imports are copied and config.json gets `auto_map`), plus the folder's other
    files (model card README.md, generation_config.json, training_log.jsonl...; never Python or
    pickles). `out_dir` must be new or empty. Returns the file names written, sorted.

    Loading `out_dir` with `AutoModel.from_pretrained(out_dir, trust_remote_code=True)` needs
    torch and transformers only (turning a result into MIDI needs this package)."""
    import shutil

    model_dir = check_model_dir(model_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: exists and is not an empty folder")
    from .configuration_fractalmidi import FractalMIDIConfig
    from .modeling_fractalmidi import FractalMIDIModel

    register_auto_classes()
    model = FractalMIDIModel.from_pretrained(model_dir)
    # `register_for_auto_class` sets a class attribute; it holds only for this save, so that
    # the package's own `save_pretrained` keeps writing folders without code
    before = {cls: cls.__dict__.get("_auto_class") for cls in (FractalMIDIConfig, FractalMIDIModel)}
    try:
        FractalMIDIConfig.register_for_auto_class("AutoConfig")
        FractalMIDIModel.register_for_auto_class("AutoModel")
        model.save_pretrained(out_dir)
    finally:
        for cls, value in before.items():
            if value is not None:
                cls._auto_class = value
            elif "_auto_class" in cls.__dict__:
                del cls._auto_class  # back to the inherited None
    written = {p.name for p in out_dir.iterdir()}
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name not in written and not p.name.endswith(_NOT_COPIED):
            shutil.copyfile(p, out_dir / p.name)
    return sorted(p.name for p in out_dir.iterdir())


def push(model_dir, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, api=None) -> str:
    """Upload the model in `model_dir` with its code (`save_with_code`) to the Hub model repo
    `repo_id` (created if missing; `private` for a new one; `revision` a branch, created if
    missing). Python files in the repo that this upload does not write are deleted, so the
    repo's code is the package's. Returns the commit's URL. `api`: a `huggingface_hub.HfApi`
    (default: one with the saved login / HF_TOKEN)."""
    import tempfile

    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    check_model_dir(model_dir)

    api = api if api is not None else HfApi()
    with tempfile.TemporaryDirectory(prefix="fractalmidi-push-") as tmp:
        save_with_code(model_dir, tmp)
        try:
            api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model", revision=revision,
                                       commit_message=commit_message or "Upload FractalMIDI model with its code",
                                       delete_patterns=["*.py"])
        except OSError as e:  # offline, no connection, no permission: huggingface_hub's errors are OSErrors
            reason = " ".join(str(e).split())
            raise InputError(f"upload to {repo_id} failed: {reason[:300]}") from None
    return getattr(commit, "commit_url", None) or str(commit)
