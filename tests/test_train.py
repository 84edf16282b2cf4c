"""train_accelerate.py and fractalmidi.training: the schedules and data pieces as plain
functions, then real runs of the script with the tiny config on the POP909 sample: one process,
two processes (`accelerate launch`, DDP over gloo on the CPU), and runs killed mid-way and
resumed, which must log the same losses and end with the same weights as runs left alone."""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import random
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fractalmidi.data import build_dataset, collate, load_dataset_dir
from fractalmidi.training import (
    CheckpointError,
    EpochSampler,
    TrainingState,
    TrainWindows,
    ValidationWindows,
    batch_to_tensors,
    collate_tensors,
    latest_checkpoint,
    list_checkpoints,
    load_model_file,
    load_state_file,
    lr_factor,
    read_jsonl,
    rng_state,
    save_model_file,
    save_state_file,
    set_rng_state,
    structure_weight_at,
    truncate_log,
)
ROOT = Path(__file__).resolve().parents[1]
POP909_DIR = ROOT / "tests" / "data" / "pop909"  # as in conftest.py
SCRIPT = ROOT / "train_accelerate.py"
TINY = ROOT / "hub_configs" / "tiny.json"
MAX_STEPS = 8
# the run every test trains: 8 steps of batch 2 on 4-bar windows, a log line per step, an
# evaluation every 4 steps, a checkpoint every 3, both schedules moving inside the 8 steps
ARGS = [
    "--config", str(TINY), "--num_bars", "4", "--batch_size", "2", "--max_steps", str(MAX_STEPS),
    "--logging_steps", "1", "--eval_steps", "4", "--checkpointing_steps", "3",
    "--warmup_steps", "2", "--structure_warmup_steps", "2", "--structure_ramp_steps", "3",
    "--learning_rate", "1e-3", "--log_with", "none", "--seed", "7",
]


# ----------------------------------------------------------------------------- schedules
def test_lr_factor_warmup_then_cosine_to_floor():
    f = [lr_factor(s, warmup_steps=10, max_steps=110, min_lr_ratio=0.1) for s in range(130)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear, no step at lr 0
    assert f[10] == pytest.approx(1.0)  # the peak right after warmup
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # then never rises
    assert f[60] == pytest.approx(0.55)  # half-way through the cosine: (1 + 0.1) / 2
    assert f[110] == pytest.approx(0.1) and f[129] == pytest.approx(0.1)  # the floor, and it stays
    assert min(f) == pytest.approx(0.1)
    assert lr_factor(0, warmup_steps=0, max_steps=5) == pytest.approx(1.0)  # no warmup
    assert lr_factor(3, warmup_steps=0, max_steps=5, min_lr_ratio=0.0) < lr_factor(2, 0, 5, 0.0)


def test_structure_weight_zero_then_linear_ramp_to_one():
    w = [structure_weight_at(s, warmup_steps=5, ramp_steps=4) for s in range(12)]
    assert w == pytest.approx([0, 0, 0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1])
    assert structure_weight_at(4999) == 0.0 and structure_weight_at(5000) == pytest.approx(1 / 1000)
    assert structure_weight_at(5999) == 1.0  # the defaults: 5,000 steps at 0, 1,000 to ramp
    assert [structure_weight_at(s, 2, 0) for s in range(4)] == [0, 0, 1, 1]  # no ramp: a step


# ----------------------------------------------------------------------------- data pieces
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """The 5 POP909 songs, 4 for training and 1 (001) for validation."""
    out = tmp_path_factory.mktemp("data") / "pop909"
    ds, report = build_dataset(POP909_DIR, out, validation_fraction=0.5, progress=False)
    assert report.splits == {"train": 4, "validation": 1}
    return out


def test_batch_to_tensors_types_and_list_keys(dataset_dir):
    windows = TrainWindows(load_dataset_dir(dataset_dir, "train"), num_bars=4, max_shift=5, seed=0)
    examples = [windows[(0, 0)], windows[(0, 1)]]
    batch = collate(examples)
    tensors = batch_to_tensors(batch)
    assert set(tensors) == {"roll", "bar_position", "bar_index", "step_mask", "bar_tempo", "bar_density",
                            "time_signatures", "bar_mask"}  # song_id, first_bar, shift dropped
    assert {"song_id", "first_bar", "shift"} <= set(batch)
    assert tensors["roll"].dtype == torch.uint8 and tensors["roll"].shape[:2] == (2, 3)
    assert tensors["bar_index"].dtype == torch.int64 and tensors["step_mask"].dtype == torch.bool
    assert tensors["bar_tempo"].dtype == torch.float32 and tensors["time_signatures"].shape[-1] == 2
    for k, v in tensors.items():
        np.testing.assert_array_equal(v.numpy(), batch[k])
    assert collate_tensors(examples).keys() == tensors.keys()


def test_train_examples_depend_on_seed_epoch_and_song_only(dataset_dir):
    rows = load_dataset_dir(dataset_dir, "train")
    a = TrainWindows(rows, num_bars=4, max_shift=5, seed=0)
    b = TrainWindows(rows, num_bars=4, max_shift=5, seed=0)
    keys = [(e, i) for e in range(3) for i in range(len(rows))]
    first = {k: a[k] for k in keys}
    for k in reversed(keys):  # another order of reads, another instance: the same examples
        assert (b[k]["first_bar"], b[k]["shift"]) == (first[k]["first_bar"], first[k]["shift"])
        np.testing.assert_array_equal(b[k]["roll"], first[k]["roll"])
    # the epoch changes the draw (some song gets another window or shift)
    assert any((first[(0, i)]["first_bar"], first[(0, i)]["shift"]) != (first[(1, i)]["first_bar"], first[(1, i)]["shift"])
               for i in range(len(rows)))

    sampler = EpochSampler(10, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert [e for e, _ in keys] == [epoch] * 10 and sorted(i for _, i in keys) == list(range(10))
        orders.append([i for _, i in keys])
    assert orders[0] == orders[2] != orders[1]
    assert len(sampler) == 10


def test_validation_windows_cover_songs(dataset_dir):
    rows = load_dataset_dir(dataset_dir, "validation")
    windows = ValidationWindows(rows, num_bars=4)
    n_bars = len(rows[0]["bar_starts"]) - 1
    assert len(windows) == math.ceil(n_bars / 4)  # non-overlapping, the last one ends at the end
    assert len(windows[0]["bar_tempo"]) == 4
    assert len(ValidationWindows(rows, num_bars=4, max_windows=3)) == 3


def test_checkpoint_folders_and_log_truncation(tmp_path):
    for name in ("step_9", "step_10", "step_2", ".step_11.tmp", ".step_1.abcd.old", "other"):
        (tmp_path / name).mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 9, 10]  # numeric order, no tmp / old
    assert latest_checkpoint(tmp_path) == tmp_path / "step_10"
    assert latest_checkpoint(tmp_path / "missing") is None

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "x": s / 2}) + "\n" for s in (1, 2, 3, 3, 4)))
    truncate_log(log, 3)
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3, 3]

    state = TrainingState()
    state.add({"a": 1.0})
    state.add({"a": 3.0})
    copy = TrainingState()
    copy.load_state_dict(state.state_dict())
    assert copy.take_window() == {"a": 2.0} and copy.window_steps == 0


def test_log_with_a_torn_last_line_is_read_and_a_bad_middle_line_is_an_error(tmp_path):
    """A kill while a log line was written leaves it cut off, with no newline: that last line
    is dropped (with a warning); any other bad line is an error naming the file and the line."""
    log = tmp_path / "log.jsonl"
    good = "".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))
    log.write_text(good + '{"step": 4, "train/lo')
    with pytest.warns(UserWarning, match=r"log\.jsonl: line 4 is incomplete"):
        assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3]
    said = []
    truncate_log(log, 3, on_torn=said.append)
    assert len(said) == 1 and "line 4 is incomplete" in said[0]
    assert log.read_text() == "".join(json.dumps({"step": s}, sort_keys=True) + "\n" for s in (1, 2, 3))

    for text, line in (
        ('{"step": 1}\n{"step": 2, "x\n{"step": 3}\n', 2),  # in the middle
        ('{"step": 1}\n{"step": 2, "x\n', 2),  # last, but complete (it has its newline)
        ('{"step": 1}\n[2]\n{"step": 3}\n', 2),  # JSON, not an object
    ):
        log.write_text(text)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(log))}: line {line} is not"):
            read_jsonl(log)
        with pytest.raises(ValueError, match=rf"line {line}"):
            truncate_log(log, 5)
        assert log.read_text() == text  # left as it was


class _Planted:
    """Unpickling this creates the file `marker`: what a crafted checkpoint file could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pickles(folder: Path, marker: Path, names) -> None:
    for name in names:
        (folder / name).write_bytes(pickle.dumps(_Planted(marker)))


# every file accelerate's load_state (1.15) could read from a checkpoint folder
ACCELERATE_FILES = ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "random_states_1.pkl",
                    "optimizer.bin", "scheduler.bin", "pytorch_model.bin", "sampler.bin", "dl_state_dict.bin", "scaler.pt")


def test_state_files_round_trip_and_never_unpickle(tmp_path):
    """Optimizer, scheduler, random states and weights go to safetensors (+ JSON metadata) and
    come back exactly; a pickle under any of their names is refused with CheckpointError, never
    run."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, warmup_steps=2, max_steps=5))
    for _ in range(2):
        model(torch.randn(2, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    for name, obj in (("opt", optimizer.state_dict()), ("sched", scheduler.state_dict())):
        save_state_file(obj, tmp_path / f"{name}.safetensors")
        back = load_state_file(tmp_path / f"{name}.safetensors")
        assert repr(back) == repr(obj)  # the same values and types (int keys, tuples, tensors)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(load_state_file(tmp_path / "opt.safetensors"))
    assert fresh.param_groups[0]["betas"] == (0.9, 0.95)

    random.seed(1)
    np.random.seed(1)
    save_state_file(rng_state(), tmp_path / "rng.safetensors")
    draws = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(load_state_file(tmp_path / "rng.safetensors"))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])

    save_model_file(model, tmp_path / "model.safetensors")
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    load_model_file(other, tmp_path / "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(CheckpointError, match="weights of another model"):
        load_model_file(torch.nn.Linear(3, 5), tmp_path / "model.safetensors")

    marker = tmp_path / "ran"
    _plant_pickles(tmp_path, marker, ["opt.safetensors", "model.safetensors", "state.json"])
    with pytest.raises(CheckpointError, match=r"opt\.safetensors: not a safetensors file"):
        load_state_file(tmp_path / "opt.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a safetensors file"):
        load_model_file(model, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"state\.json: not a JSON file"):
        TrainingState().load(tmp_path / "state.json")
    with pytest.raises(CheckpointError, match=r"missing"):
        load_state_file(tmp_path / "nothing.safetensors")
    assert not marker.exists()


# ----------------------------------------------------------------------------- real runs
def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    # one thread per process: the tiny model gains nothing from more, and torch's OpenMP threads
    # slow down ~100x when another process holds one of the cores they wait on
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               ACCELERATE_USE_CPU="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, dataset: Path, *extra: str, processes: int = 1, expect: int = 0) -> str:
    """Run the script (one process with python, else accelerate launch); return its output."""
    script = [str(SCRIPT), *ARGS, "--dataset", str(dataset), "--output_dir", str(out), *extra]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *script]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(out.parent), capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, output[-4000:]
    return output


def _train_records(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "training_log.jsonl") if "train/loss" in r]


def _eval_records(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "training_log.jsonl") if "eval/loss" in r]


def _assert_same_run(a: Path, b: Path) -> None:
    """Two runs logged the same losses at every step, each step once, and ended equal."""
    ra, rb = _train_records(a), _train_records(b)
    assert [r["step"] for r in rb] == list(range(1, MAX_STEPS + 1))  # none lost, none repeated
    for x, y in zip(ra, rb):
        for k in x:
            if k.startswith("train/") or k in ("lr", "structure_weight", "grad_norm", "epoch"):
                assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-7), (x["step"], k)
    ea, eb = _eval_records(a), _eval_records(b)
    assert [r["step"] for r in eb] == [r["step"] for r in ea] == [4, 8]
    for x, y in zip(ea, eb):
        assert y == pytest.approx(x, rel=1e-6)
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7)


def _assert_finished(out: Path, processes: int) -> None:
    final = out / "final"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in final.iterdir()}
    assert not list(out.glob(".final*")) and not list((out / "checkpoints").glob(".*"))  # no temp folders
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3, 6]  # every 3 steps, last 2 kept
    ckpt = out / "checkpoints" / "step_6"
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors", "optimizer.safetensors", "scheduler.safetensors", "training_state.json",
        "training_args.json", *(f"rng_state_{i}.safetensors" for i in range(processes)),
    }  # safetensors and JSON: no pickle
    umask = os.umask(0o077)
    os.umask(umask)
    for file in [*ckpt.iterdir(), *final.iterdir()]:  # the mode of any new file, not safetensors' 0600
        assert file.stat().st_mode & 0o777 == 0o666 & ~umask, file
    card = (final / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\nlibrary_name: transformers\n")
    assert f"{MAX_STEPS} optimizer steps" in card and f"| processes | {processes} |" in card
    assert "train_accelerate.py" in card and "--max_steps 8" in card  # the command that made it
    records = _train_records(out)
    assert [r["step"] for r in records] == list(range(1, MAX_STEPS + 1))
    assert all(math.isfinite(r["train/loss"]) and r["tokens_per_sec"] > 0 for r in records)
    assert {"train/structure", "train/notes", "train/velocity", "train/harmony"} <= set(records[0])
    evals = _eval_records(out)
    assert [r["step"] for r in evals] == [4, 8] and all(math.isfinite(r["eval/loss"]) for r in evals)


@pytest.fixture(scope="module")
def straight_run(dataset_dir, tmp_path_factory) -> Path:
    """One process, 8 steps, never interrupted (the reference for the resume test)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    _train(out, dataset_dir)
    return out


def test_one_process_trains_and_saves_a_loadable_model(straight_run):
    _assert_finished(straight_run, processes=1)
    # the schedules the log reports are the plain functions' (step s logs optimizer step s - 1)
    for r in _train_records(straight_run):
        s = r["step"] - 1
        assert r["lr"] == pytest.approx(1e-3 * lr_factor(s, 2, MAX_STEPS, 0.1))
        assert r["structure_weight"] == pytest.approx(structure_weight_at(s, 2, 3))
    assert _train_records(straight_run)[0]["structure_weight"] == 0.0
    # the structure part weighs 0 in the total during the warmup, fully after the ramp
    first, last = _train_records(straight_run)[0], _train_records(straight_run)[-1]
    parts = lambda r, w: w * r["train/structure"] + r["train/notes"] + r["train/velocity"] + r["train/harmony"]
    assert first["train/loss"] == pytest.approx(parts(first, 0.0), rel=1e-5)
    assert last["train/loss"] == pytest.approx(parts(last, 1.0), rel=1e-5)

    from fractalmidi.modeling_fractalmidi import FractalMIDIModel

    model = FractalMIDIModel.from_pretrained(straight_run / "final")
    saved = load_file(straight_run / "final" / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(p, saved[name])


def test_killed_run_resumes_exactly(straight_run, dataset_dir, tmp_path):
    out = tmp_path / "run"
    # dies right after step 5: checkpoint 3 is on disk, steps 4 and 5 are logged
    _train(out, dataset_dir, "--stop_after_steps", "5", expect=3)
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3]
    assert [r["step"] for r in _train_records(out)] == [1, 2, 3, 4, 5]
    assert not (out / "final").exists()
    # starting again without --resume refuses to mix two runs
    assert "--resume auto" in _train(out, dataset_dir, expect=2)
    # a checkpoint a kill interrupted while it was written is ignored, then cleaned away
    (out / "checkpoints" / ".step_6.tmp").mkdir()
    (out / "checkpoints" / ".step_6.tmp" / "model.safetensors").write_bytes(b"half")
    output = _train(out, dataset_dir, "--resume", "auto")
    assert f"resuming from {out / 'checkpoints' / 'step_3'}" in output
    _assert_finished(out, processes=1)
    _assert_same_run(straight_run, out)


def test_resume_never_unpickles_and_survives_a_torn_log_line(straight_run, dataset_dir, tmp_path):
    """A pickle planted in the checkpoint folder under every name accelerate's load_state would
    read is never opened (the marker its unpickling would create never appears), and the resume
    is still exact; a log line a kill cut off is dropped with a warning. A checkpoint of pickles
    alone, and a bad line in the middle of the log, are one-line errors."""
    out = tmp_path / "run"
    shutil.copytree(straight_run, out, ignore=shutil.ignore_patterns("final"))
    marker = tmp_path / "pwned"
    _plant_pickles(out / "checkpoints" / "step_6", marker, ACCELERATE_FILES)
    with open(out / "training_log.jsonl", "a") as f:
        f.write('{"step": 9, "train/lo')  # killed mid-write
    output = _train(out, dataset_dir, "--resume", "auto")
    assert not marker.exists()
    assert f"resuming from {out / 'checkpoints' / 'step_6'}" in output
    assert re.search(r"warning: .*training_log\.jsonl: line \d+ is incomplete", output)
    _assert_same_run(straight_run, out)

    old = tmp_path / "old_checkpoint"  # what an older version (accelerate's save_state) left
    old.mkdir()
    shutil.copy(out / "checkpoints" / "step_6" / "model.safetensors", old)
    _plant_pickles(old, marker, ACCELERATE_FILES)
    output = _train(tmp_path / "other", dataset_dir, "--resume", str(old), expect=2)
    assert "older train_accelerate.py" in output and "Traceback" not in output
    assert not marker.exists()

    lines = (out / "training_log.jsonl").read_text().split("\n")
    lines[2] = lines[2][:-5]
    (out / "training_log.jsonl").write_text("\n".join(lines))
    output = _train(out, dataset_dir, "--resume", "auto", expect=2)
    assert f"error: {out / 'training_log.jsonl'}: line 3 is not valid JSON" in output and "Traceback" not in output


def test_two_processes_ddp_over_gloo_and_exact_resume(dataset_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` with no CUDA device: two processes on
    the CPU over gloo (`--cpu --num_processes 2` would start one: accelerate spawns CPU
    processes only through mpirun), with gradient accumulation (DDP's no_sync) on top."""
    accumulate = ("--gradient_accumulation_steps", "2")
    straight = tmp_path / "straight"
    output = _train(straight, dataset_dir, *accumulate, processes=2)
    assert "2 process(es)" in output
    _assert_finished(straight, processes=2)
    assert "| effective batch size | 8 |" in (straight / "final" / "README.md").read_text()

    out = tmp_path / "resumed"
    _train(out, dataset_dir, *accumulate, "--stop_after_steps", "5", processes=2, expect=1)  # torchrun: a worker failed
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [3]
    _train(out, dataset_dir, *accumulate, "--resume", "auto", processes=2)
    _assert_finished(out, processes=2)
    _assert_same_run(straight, out)


def test_fine_tuning_starts_from_a_saved_model(straight_run, dataset_dir, tmp_path):
    """--init_from: the weights and config of a saved model, a fresh optimizer; with a
    vanishing learning rate the result is the starting model."""
    base = [a for a in ARGS if a not in ("--config", str(TINY))]
    start = straight_run / "final"
    out = tmp_path / "ft"
    cmd = [sys.executable, str(SCRIPT), *base, "--max_steps", "2", "--eval_steps", "0", "--learning_rate", "1e-12",
           "--init_from", str(start), "--dataset", str(dataset_dir), "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    before, after = load_file(start / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=1e-8)
    assert f"| initialised from | {start} |" in (out / "final" / "README.md").read_text()
    # --config and --init_from together, or a folder that holds no model: one clear line, status 2
    for extra, message in (
        (["--config", str(TINY), "--init_from", str(start)], "give --config or --init_from, not both"),
        (["--init_from", str(tmp_path)], "not a saved model folder"),
    ):
        cmd = [sys.executable, str(SCRIPT), *extra, "--dataset", str(dataset_dir), "--output_dir", str(tmp_path / "x")]
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_frozen_levels_keep_their_weights(straight_run, dataset_dir, tmp_path):
    """--freeze structure harmony: a fine-tune of the note level alone."""
    base = [a for a in ARGS if a not in ("--config", str(TINY))]
    start = straight_run / "final"
    out = tmp_path / "frozen"
    cmd = [sys.executable, str(SCRIPT), *base, "--max_steps", "2", "--eval_steps", "0", "--init_from", str(start),
           "--freeze", "structure", "harmony", "--dataset", str(dataset_dir), "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    before, after = load_file(start / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    for k in before:
        if k.startswith(("structure.", "harmony.")):
            assert torch.equal(after[k], before[k]), k
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("notes."))
    assert "| frozen levels | structure, harmony |" in (out / "final" / "README.md").read_text()
    cmd = [sys.executable, str(SCRIPT), "--init_from", str(start), "--freeze", "structure", "harmony", "notes",
           "--dataset", str(dataset_dir), "--output_dir", str(tmp_path / "x")]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "every level is frozen" in proc.stderr, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- the AR baseline
def _tiny_baseline_config(path: Path) -> Path:
    """A small Llama config over the REMI vocabulary (hub_configs/ar_baseline.json in miniature)."""
    from benchmarks.baseline import remi_tokenizer

    config = json.loads((ROOT / "hub_configs" / "ar_baseline.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
    assert config["vocab_size"] == len(remi_tokenizer())
    path.write_text(json.dumps(config))
    return path


def _train_baseline(out: Path, dataset: Path, config: Path, *extra: str, expect: int = 0) -> str:
    args = ["--config", str(config), "--num_bars", "2", "--max_tokens", "128", "--batch_size", "2",
            "--max_steps", "6", "--logging_steps", "1", "--eval_steps", "3", "--checkpointing_steps", "2",
            "--warmup_steps", "2", "--learning_rate", "1e-3", "--log_with", "none", "--seed", "3"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--dataset", str(dataset), "--output_dir", str(out),
                           *extra], cwd=ROOT, env=_env(out.parent), capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, output[-4000:]
    return output


def test_the_baseline_trains_resumes_and_loads_with_the_same_loop(dataset_dir, tmp_path):
    """A Llama config (`model_type` llama) trains the autoregressive baseline on REMI windows
    of the same dataset with the same loop: checkpoints of safetensors and JSON, an exact
    resume, a final folder with the tokenizer and a model card that `load_baseline` reads and
    `generate_bars` samples from."""
    from benchmarks.baseline import generate_bars, load_baseline

    config = _tiny_baseline_config(tmp_path / "llama.json")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _train_baseline(straight, dataset_dir, config)
    _train_baseline(killed, dataset_dir, config, "--stop_after_steps", "3", expect=3)
    assert "resuming from" in _train_baseline(killed, dataset_dir, config, "--resume", "auto")
    ra, rb = _train_records(straight), _train_records(killed)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == list(range(1, 7))
    for x, y in zip(ra, rb):
        assert y["train/loss"] == pytest.approx(x["train/loss"], rel=1e-6) and "structure_weight" not in x
    assert ra[-1]["train/loss"] < ra[0]["train/loss"]
    assert [r["step"] for r in _eval_records(straight)] == [3, 6]
    wa, wb = load_file(straight / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-7)
    final = straight / "final"
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in final.iterdir()}
    card = (final / "README.md").read_text()
    assert "LlamaForCausalLM" in card and "6 optimizer steps" in card and "--max_steps 6" in card
    # the validation loss names the windows it was measured on (--eval_max_windows bounds them)
    assert re.search(r"\| validation \(\d+ \d+-bar windows of the validation songs, evenly spaced\) \| \d", card)
    model, tokenizer = load_baseline(final)
    g = generate_bars(model, tokenizer, num_bars=1, seed=0, max_tokens_per_bar=16)
    assert g.pieces[0].num_bars == 1 and 1 <= g.tokens[0] <= 32


def test_the_baseline_stops_at_its_time_budget_and_refuses_a_wrong_vocabulary(dataset_dir, tmp_path):
    config = _tiny_baseline_config(tmp_path / "llama.json")
    out = tmp_path / "budget"
    output = _train_baseline(out, dataset_dir, config, "--max_train_seconds", "0.001")
    assert "--max_train_seconds 0.001: stopped after 1 of 6 steps" in output
    assert [r["step"] for r in _train_records(out)] == [1] and [r["step"] for r in _eval_records(out)] == [1]
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [1] and (out / "final" / "tokenizer.json").is_file()
    assert "Its time budget was 0.001 s (`--max_train_seconds`): it stopped there." in (out / "final" / "README.md").read_text()
    bad = json.loads(config.read_text())
    bad["vocab_size"] = 100
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    output = _train_baseline(tmp_path / "bad", dataset_dir, tmp_path / "bad.json", expect=2)
    assert "vocab_size 100, but the REMI tokenizer has 595 tokens" in output
