"""Train FractalMIDI with Accelerate on a dataset built by `fractalmidi build-dataset`.

One process (CPU or one GPU):

    python train_accelerate.py --config hub_configs/small.json --dataset data/pop909 --output_dir outputs/small

Several processes (DDP; NCCL on GPUs; on a machine without CUDA the processes torchrun starts
run on the CPU over gloo):

    accelerate launch --multi_gpu --num_processes 2 train_accelerate.py --config ... --dataset ... --output_dir ...

(`accelerate launch --cpu --num_processes 2` starts a single process unless MPI is set up:
accelerate 1.15 spawns CPU processes only through mpirun.)

The shape of accelerate's own examples: `training_function(config, args)` makes the
Accelerator, starts the trackers, loads the data under `main_process_first`, seeds, builds the
model, calls `prepare` once, then loops with `accumulate`, saves checkpoints, and ends with
`end_training`. The schedules, the data pipeline, the checkpoint files and the model card are
plain pieces of `fractalmidi.training`.

What lands in --output_dir:

    training_log.jsonl          one JSON object per log step (train) and per evaluation (eval)
    checkpoints/step_N/         a checkpoint every --checkpointing_steps steps (the last
                                --keep_checkpoints kept), written as .step_N.tmp, then renamed:
                                model.safetensors, optimizer.safetensors, scheduler.safetensors,
                                rng_state_P.safetensors (one per process), training_state.json,
                                training_args.json. Safetensors and JSON only: accelerate's
                                save_state would write pickles, and loading a pickle from a
                                folder can run code, so no pickle is written or read.
    final/                      save_pretrained of the model (config.json, model.safetensors) and
                                a model card README.md, ready for push_to_hub
    fractalmidi/                TensorBoard events (when --log_with tensorboard)

`--resume auto` (or a checkpoint folder) continues a run exactly: the same optimizer step, the
same data (every random window is drawn from (seed, epoch, song), and the epoch's order from
(seed, epoch)), the same random state (torch's RNG, which draws the training masks, is restored
from the checkpoint), the same log (a last line cut off by the kill is dropped, with a warning).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, is_tensorboard_available, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fractalmidi.configuration_fractalmidi import FractalMIDIConfig
from fractalmidi.data import load_dataset_dir, row_to_piece
from fractalmidi.modeling_fractalmidi import FractalMIDIModel
from fractalmidi.training import (
    CheckpointError,
    EpochSampler,
    TrainingState,
    TrainWindows,
    ValidationWindows,
    append_jsonl,
    collate_tensors,
    latest_checkpoint,
    list_checkpoints,
    load_model_file,
    load_state_file,
    lr_factor,
    model_card,
    normal_file_mode,
    remove_dir,
    replace_dir,
    rng_state,
    save_model_file,
    save_state_file,
    set_rng_state,
    structure_weight_at,
    truncate_log,
)

LOG_FILE = "training_log.jsonl"
STOP_EXIT_CODE = 3  # --stop_after_steps: the exit status of the simulated crash


# ----------------------------------------------------------------------------- helpers
def fail(message: str) -> None:
    """End with one line on stderr and exit status 2, as the fractalmidi command line does."""
    print(f"train_accelerate.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def default_mixed_precision() -> str:
    """bf16 where a CUDA device has it, else fp32 ("no"); on a CPU bf16 must be asked for."""
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def launched_without_cuda() -> bool:
    """Started by torchrun (`accelerate launch --multi_gpu`) on a machine with no CUDA device:
    accelerate then needs `cpu=True` to run the processes on the CPU (gloo)."""
    return int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.cuda.is_available()


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices (linear, embedding, convolution
    weights), none on vectors (biases, norm scales, learned conditions)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def loss_vector(out) -> tuple[list[str], torch.Tensor]:
    """Names and a (K,) float tensor of the total loss and its parts (sorted by name; the AR
    baseline has only the total)."""
    parts = getattr(out, "losses", None) or {}
    names = ["loss", *sorted(parts)]
    values = [out.loss, *(parts[k] for k in names[1:])]
    return names, torch.stack([v.detach().float() for v in values])


def is_baseline(config) -> bool:
    """The autoregressive baseline (a Llama config, `benchmarks/baseline.py`) rather than FractalMIDI."""
    return getattr(config, "model_type", None) == "llama"


def forward(model, batch, structure_weight: float):
    """The model's output on a batch: FractalMIDI takes the structure loss weight, the
    baseline (a causal LM) its input ids, attention mask and labels alone."""
    if "input_ids" in batch:
        return model(**batch)
    return model(**batch, structure_weight=structure_weight)


def batch_size_of(batch) -> int:
    return next(iter(batch.values())).shape[0]


def batch_tokens(batch) -> int:
    """What a batch trains on: grid steps of music (FractalMIDI), tokens (the baseline)."""
    return int((batch["labels"] != -100).sum() if "input_ids" in batch else batch["step_mask"].sum())


def evaluate(model, dataloader, accelerator, seed: int) -> dict[str, float]:
    """Mean validation losses (structure weight 1) over every validation window, each counted
    once (`gather_for_metrics` drops the windows repeated to even out the processes' batches).
    The masks are drawn from a fixed seed in a forked RNG: every evaluation sees the same masks,
    and the training RNG is left untouched (so a resumed run draws what the first one did)."""
    model.eval()
    names, sums, count = None, None, 0
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for batch in dataloader:
            out = forward(model, batch, 1.0)
            names, vec = loss_vector(out)
            per_example = vec.expand(batch_size_of(batch), -1)  # (n, K): the batch mean per example
            gathered = accelerator.gather_for_metrics(per_example)
            sums = gathered.sum(0) if sums is None else sums + gathered.sum(0)
            count += gathered.shape[0]
    model.train()
    if names is None:
        return {}
    return {f"eval/{k}": (sums[i] / count).item() for i, k in enumerate(names)}


# the arguments that decide which data and which random numbers each step sees
RESUME_KEYS = ("dataset", "num_bars", "max_shift", "max_tokens", "batch_size", "gradient_accumulation_steps", "seed")
ARGS_FILE = "training_args.json"


def run_identity(args, accelerator) -> dict:
    return {**{k: getattr(args, k) for k in RESUME_KEYS}, "num_processes": accelerator.num_processes}


# the files of a checkpoint folder (safetensors and JSON: nothing in them can run code)
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
SCHEDULER_FILE = "scheduler.safetensors"
SCALER_FILE = "scaler.safetensors"  # fp16 only
STATE_FILE = "training_state.json"


def rng_file(process_index: int) -> str:
    return f"rng_state_{process_index}.safetensors"


def save_checkpoint(accelerator, checkpoint_dir: Path, step: int, keep: int, identity: dict,
                    model, optimizer, lr_scheduler, state: TrainingState) -> Path:
    """Write the checkpoint into checkpoints/.step_N.tmp, then rename it to checkpoints/step_N
    (a killed run leaves a .tmp folder, never a half-written step_N), then delete all but the
    last `keep`. Every process writes its random states; the main one the model, optimizer,
    scheduler, the loop's state and training_args.json (what a resume must keep the same)."""
    final = checkpoint_dir / f"step_{step}"
    tmp = checkpoint_dir / f".step_{step}.tmp"
    if accelerator.is_main_process:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for leftover in checkpoint_dir.glob(".step_*"):  # from a run killed while saving
            remove_dir(leftover)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    save_state_file(rng_state(), tmp / rng_file(accelerator.process_index))
    if accelerator.is_main_process:
        save_model_file(accelerator.unwrap_model(model), tmp / MODEL_FILE)
        save_state_file(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        save_state_file(lr_scheduler.state_dict(), tmp / SCHEDULER_FILE)
        if accelerator.scaler is not None:
            save_state_file(accelerator.scaler.state_dict(), tmp / SCALER_FILE)
        state.save(tmp / STATE_FILE)
        (tmp / ARGS_FILE).write_text(json.dumps(identity, indent=1) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, final)
        for _, old in list_checkpoints(checkpoint_dir)[:-keep] if keep > 0 else []:
            remove_dir(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: Path, model, optimizer, lr_scheduler, state: TrainingState,
                    gradient_accumulation_steps: int) -> None:
    """Restore what `save_checkpoint` wrote. Only the files named above are read, and only as
    safetensors and JSON: a pickle in the folder (accelerate's custom_checkpoint_0.pkl,
    random_states_0.pkl, optimizer.bin, ...) is never opened. CheckpointError, naming the file,
    when one is missing or not what it should be."""
    if not (folder / STATE_FILE).is_file() and (
        any(folder.glob("*.pkl")) or any(folder.glob("*.bin"))
    ):
        raise CheckpointError(
            f"{folder}: a checkpoint of an older train_accelerate.py (accelerate pickle files, which are "
            "never loaded: unpickling a file can run code); it cannot be resumed"
        )
    state.load(folder / STATE_FILE)
    load_model_file(accelerator.unwrap_model(model), folder / MODEL_FILE)

    path = folder / OPTIMIZER_FILE
    saved = load_state_file(path)
    try:
        optimizer.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not this run's optimizer state ({type(e).__name__}: {e})") from None
    for group in optimizer.param_groups:  # AdamW's moments: one of each parameter's shape
        for p in group["params"]:
            for k, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise CheckpointError(
                        f"{path}: not this run's optimizer state ({k} of shape {tuple(v.shape)} "
                        f"for a parameter of shape {tuple(p.shape)})"
                    )

    path = folder / SCHEDULER_FILE
    saved = load_state_file(path)
    expected = lr_scheduler.state_dict()
    if not isinstance(saved, dict) or not set(saved) <= set(expected):
        raise CheckpointError(f"{path}: not this run's learning-rate scheduler state")
    try:
        lr_scheduler.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: not this run's learning-rate scheduler state ({type(e).__name__}: {e})") from None

    if accelerator.scaler is not None:
        path = folder / SCALER_FILE
        saved = load_state_file(path)
        try:
            accelerator.scaler.load_state_dict(saved)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a gradient scaler state ({type(e).__name__}: {e})") from None

    # accelerate counts micro-batches to know when gradients sync; it stood here at the save
    accelerator.step = state.step * gradient_accumulation_steps

    path = folder / rng_file(accelerator.process_index)  # last: nothing after it may draw
    if path.exists():
        set_rng_state(load_state_file(path), str(path))
    else:
        print(
            f"warning: {path}: missing (the checkpoint was written by fewer processes): "
            "this process's random numbers will differ from the first run's",
            file=sys.stderr,
        )


def warm_start(model, folder: Path) -> tuple[int, int]:
    """Copy into `model` every tensor of a saved model (`folder/model.safetensors`, read with
    safetensors: nothing is unpickled) whose name and shape match; the others (new levels,
    layers whose size changed) keep their fresh initialisation. Returns (copied, fresh)."""
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    own = model.state_dict()
    take = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    return len(take), len(own) - len(take)


def with_song_priors(generation_config, rows, levels=()):
    """The generation config with what `generate` draws from when the caller gives no form or
    key: `form_prior`, the form strings of the training songs whose annotations aligned well
    (sorted, repeats kept: drawn in proportion), and `minor_share`, the share of those songs
    in a minor key; for a model with a rhythm level, also `rhythm_patterns`, the training
    songs' 4/4 bar onset patterns in 16 clusters (`sampling.fit_bar_patterns`), with
    `rhythm_prior` 1. Unchanged for a dataset without the structure columns."""
    if "form" not in rows.column_names:
        return generation_config
    if "rhythm" in levels:
        from fractalmidi.metrics import bar_onset_patterns
        from fractalmidi.sampling import fit_bar_patterns

        patterns = bar_onset_patterns(row_to_piece(row) for row in rows)
        if len(patterns) >= 16:
            generation_config.rhythm_patterns = fit_bar_patterns(patterns, clusters=16)
            generation_config.rhythm_prior = 1.0
    forms = rows["form"]
    aligned = rows["aligned_well"]
    modes = rows["key_mode"]
    kept = [(f, m) for f, a, m in zip(forms, aligned, modes) if a and f]
    if not kept:
        return generation_config
    generation_config.form_prior = sorted(f for f, _ in kept)
    with_key = [m for _, m in kept if m >= 0]
    generation_config.minor_share = round(sum(m == 1 for m in with_key) / len(with_key), 4) if with_key else 0.0
    return generation_config


def save_final(model, card: str, output_dir: Path, tokenizer=None) -> Path:
    """save_pretrained (config.json, model.safetensors) and README.md (and the baseline's
    tokenizer.json) into output_dir/final, written as a temporary folder, then renamed into place."""
    final = output_dir / "final"
    tmp = output_dir / ".final.tmp"
    if tmp.exists():
        remove_dir(tmp)
    model.save_pretrained(tmp)  # transformers 5 writes safetensors only
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if tokenizer is not None:
        from benchmarks.baseline import save_tokenizer

        save_tokenizer(tokenizer, tmp)
    for file in tmp.iterdir():  # model.safetensors comes 0600 from safetensors
        if file.is_file():
            normal_file_mode(file)
    replace_dir(tmp, final)
    return final


def command_line(num_processes: int) -> str:
    script = [Path(sys.argv[0]).name, *sys.argv[1:]]
    if num_processes > 1:
        return shlex.join(["accelerate", "launch", "--multi_gpu", "--num_processes", str(num_processes), *script])
    return shlex.join(["python", *script])


# ----------------------------------------------------------------------------- training
def training_function(config: FractalMIDIConfig, args: argparse.Namespace) -> None:
    output_dir = Path(args.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    log_path = output_dir / LOG_FILE

    # 1. the Accelerator. Optimizer steps drive everything (schedules, logs, checkpoints), so
    #    accumulation ignores epoch ends and the LR scheduler steps once per optimizer step.
    log_with = args.log_with
    if log_with == "auto":
        log_with = "tensorboard" if is_tensorboard_available() else None
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        cpu=launched_without_cuda(),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        step_scheduler_with_optimizer=False,
        log_with=None if log_with in (None, "none") else log_with,
        project_dir=str(output_dir),
    )
    if (
        accelerator.num_processes == 1
        and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        and "MASTER_ADDR" in os.environ
    ):
        accelerator.print(
            "warning: `accelerate launch --cpu --num_processes N` starts one process without MPI; "
            "for N processes on a CPU use `accelerate launch --multi_gpu --num_processes N`"
        )

    # resume or start: decided before anything is written
    resume_from = None
    if args.resume == "auto":
        resume_from = latest_checkpoint(checkpoint_dir)
        if resume_from is None:
            accelerator.print(f"--resume auto: no checkpoint in {checkpoint_dir}, starting from step 0")
    elif args.resume:
        resume_from = Path(args.resume)
        if not resume_from.is_dir():
            fail(f"--resume {args.resume}: no such checkpoint folder")
    elif list_checkpoints(checkpoint_dir):
        fail(
            f"{checkpoint_dir} holds checkpoints of an earlier run: "
            "continue it with --resume auto, or choose another --output_dir"
        )

    # 2. trackers
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    hparams = {k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(args).items() if v is not None}
    accelerator.init_trackers("fractalmidi", config=hparams)

    # 3. data: the main process loads (or downloads) first, the others then read its cache
    with accelerator.main_process_first():
        train_rows = load_dataset_dir(args.dataset, "train")
        validation_rows = load_dataset_dir(args.dataset, "validation")
    if len(train_rows) == 0:
        fail(f"{args.dataset}: no songs in the train split")

    # 4. seed: python, numpy and torch, one seed per process (each draws its own masks);
    #    the data does not depend on it (see fractalmidi.training.TrainWindows)
    set_seed(args.seed, device_specific=True)

    # 5. model, optimizer, schedule, data loaders
    baseline = is_baseline(config)
    model_class = FractalMIDIModel
    if baseline:  # the autoregressive baseline: transformers' Llama over REMI tokens
        from transformers import LlamaForCausalLM

        from benchmarks.baseline import (
            ARTrainWindows, ARValidationWindows, collate_tokens, default_generation_config, remi_tokenizer,
        )

        model_class = LlamaForCausalLM
        tokenizer = remi_tokenizer()
        if config.vocab_size != len(tokenizer):
            fail(f"--config {args.config}: vocab_size {config.vocab_size}, but the REMI tokenizer has {len(tokenizer)} tokens")
        if args.freeze:
            fail("--freeze names FractalMIDI's levels; the baseline has none")
    if args.init_from:  # fine-tuning: the weights (and the config) of a saved model
        model = model_class.from_pretrained(args.init_from)
    else:
        model = model_class(config)
        if args.warm_start:
            copied, fresh = warm_start(model, Path(args.warm_start))
            accelerator.print(f"warm start from {args.warm_start}: {copied} tensors copied, {fresh} start fresh")
    for name in args.freeze or []:  # frozen levels keep their weights (their losses are still logged)
        level = getattr(model, name, None)
        if level is None:
            fail(f"--freeze {name}: this model has no {name} level (levels: {', '.join(config.levels)})")
        level.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        fail("--freeze: every level is frozen, nothing would train")
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, args.weight_decay), lr=args.learning_rate, betas=tuple(args.betas)
    )
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(lr_factor, warmup_steps=args.warmup_steps, max_steps=args.max_steps, min_lr_ratio=args.min_lr_ratio),
    )
    train_sampler = EpochSampler(len(train_rows), args.seed)
    if baseline:
        collate_fn = partial(collate_tokens, pad_id=config.pad_token_id)
        train_set = ARTrainWindows(train_rows, args.num_bars, args.max_shift, args.seed, tokenizer, args.max_tokens)
    else:
        collate_fn = collate_tensors
        train_set = TrainWindows(train_rows, args.num_bars, args.max_shift, args.seed)
    train_dataloader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=train_sampler,
        collate_fn=collate_fn,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),  # not torch's global RNG: the masks use that
    )
    eval_dataloader = None
    if args.eval_steps > 0 and len(validation_rows) > 0:
        eval_set = (ARValidationWindows(validation_rows, args.num_bars, args.eval_max_windows, tokenizer, args.max_tokens)
                    if baseline else ValidationWindows(validation_rows, args.num_bars, args.eval_max_windows))
        eval_dataloader = DataLoader(
            eval_set,
            batch_size=args.eval_batch_size or args.batch_size,
            shuffle=False,
            collate_fn=collate_fn,
            num_workers=args.num_workers,
        )
    elif args.eval_steps > 0:
        accelerator.print(f"{args.dataset}: no validation songs, no evaluation")

    # 6. one prepare
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )
    state = TrainingState()

    if resume_from is not None:
        accelerator.print(f"resuming from {resume_from}")
        try:
            load_checkpoint(accelerator, resume_from, model, optimizer, lr_scheduler, state,
                            args.gradient_accumulation_steps)
        except CheckpointError as e:
            fail(f"--resume: {e}")
        saved = {}
        if (resume_from / ARGS_FILE).exists():
            try:
                saved = json.loads((resume_from / ARGS_FILE).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                fail(f"--resume: {resume_from / ARGS_FILE}: not a JSON file ({e})")
            if not isinstance(saved, dict):
                fail(f"--resume: {resume_from / ARGS_FILE}: not a JSON object")
        changed = {k: (saved[k], v) for k, v in run_identity(args, accelerator).items() if k in saved and saved[k] != v}
        if changed:
            accelerator.print(
                "warning: resuming with " + ", ".join(f"{k} {new!r} (was {old!r})" for k, (old, new) in changed.items())
                + ": training continues, but not as the first run would have"
            )
    if accelerator.is_main_process:
        try:  # drop what a killed run logged after its checkpoint (and a line the kill cut off)
            truncate_log(log_path, state.step, on_torn=lambda message: accelerator.print(f"warning: {message}"))
        except ValueError as e:
            fail(str(e))
    accelerator.wait_for_everyone()

    # 7. the loop: one micro-batch per iteration, one optimizer step per
    #    --gradient_accumulation_steps micro-batches, epochs following each other seamlessly
    num_parameters = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    accelerator.print(
        f"{num_parameters / 1e6:.2f}M parameters, {len(train_rows)} training songs, "
        f"{len(validation_rows)} validation songs, {accelerator.num_processes} process(es), "
        f"mixed precision {accelerator.mixed_precision}, device {accelerator.device}"
    )
    batches_per_epoch = len(train_dataloader)  # of this process
    epoch, skip = divmod(state.step * args.gradient_accumulation_steps, batches_per_epoch)
    progress = tqdm(
        total=args.max_steps, initial=state.step, desc="training", unit="step",
        disable=not accelerator.is_local_main_process,
    )
    last_train, last_eval = {}, {}
    micro_sum, micro_tokens, names = None, 0, None
    window_tokens, window_start = 0, time.perf_counter()
    step_start = time.perf_counter()
    model.train()
    out_of_time = False  # --max_train_seconds spent (decided on the processes' mean clock, so all stop together)
    while state.step < args.max_steps and not out_of_time:
        train_sampler.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        # after a resume, the batches of this epoch that were already trained on are skipped
        # unread (their examples depend on (seed, epoch, song) only, so nothing shifts)
        batches = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        skip = 0
        for batch in batches:
            weight = structure_weight_at(state.step, args.structure_warmup_steps, args.structure_ramp_steps)
            with accelerator.accumulate(model):
                out = forward(model, batch, weight)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr = lr_scheduler.get_last_lr()[0]  # the lr of this step
                if accelerator.sync_gradients:
                    lr_scheduler.step()
                optimizer.zero_grad()

            names, vec = loss_vector(out)
            micro_sum = vec if micro_sum is None else micro_sum + vec
            micro_tokens += batch_tokens(batch)
            if not accelerator.sync_gradients:
                continue

            # ---- one optimizer step done
            state.step += 1
            now = time.perf_counter()
            state.elapsed_seconds += now - step_start
            step_start = now
            # mean over the micro-batches and the processes (one small all-reduce per step)
            extra = torch.tensor([float(micro_tokens), state.elapsed_seconds], device=micro_sum.device)
            summary = torch.cat([micro_sum / args.gradient_accumulation_steps, extra])
            summary = accelerator.reduce(summary, reduction="mean")
            out_of_time = bool(args.max_train_seconds) and summary[-1].item() >= args.max_train_seconds
            last_step = state.step >= args.max_steps or out_of_time
            summary = summary[:-1]
            step_tokens = round(summary[-1].item() * accelerator.num_processes)
            state.tokens += step_tokens
            window_tokens += step_tokens
            values = {f"train/{k}": summary[i].item() for i, k in enumerate(names)}
            values["grad_norm"] = float(grad_norm)
            state.add(values)
            micro_sum, micro_tokens = None, 0
            progress.update(1)

            if state.step % args.logging_steps == 0 or last_step:
                last_train = state.take_window()
                record = {
                    "step": state.step,
                    "epoch": epoch,
                    "lr": lr,
                    **({} if baseline else {"structure_weight": weight}),
                    **last_train,
                    "tokens_per_sec": window_tokens / max(1e-9, now - window_start),
                    "elapsed_seconds": state.elapsed_seconds,
                }
                window_tokens, window_start = 0, now
                accelerator.log(record, step=state.step)
                if accelerator.is_main_process:
                    append_jsonl(log_path, record)
                progress.set_postfix(loss=f"{last_train['train/loss']:.4f}", lr=f"{lr:.2e}", w=f"{weight:.2f}")

            if eval_dataloader is not None and (state.step % args.eval_steps == 0 or last_step):
                last_eval = evaluate(model, eval_dataloader, accelerator, args.seed)
                record = {"step": state.step, **last_eval}
                accelerator.log(record, step=state.step)
                if accelerator.is_main_process:
                    append_jsonl(log_path, record)
                    progress.write(f"step {state.step}: validation loss {last_eval['eval/loss']:.4f}")

            if args.checkpointing_steps and (state.step % args.checkpointing_steps == 0 or out_of_time):
                path = save_checkpoint(accelerator, checkpoint_dir, state.step, args.keep_checkpoints,
                                       run_identity(args, accelerator), model, optimizer, lr_scheduler, state)
                if accelerator.is_main_process:
                    progress.write(f"step {state.step}: saved {path}")

            if args.stop_after_steps and state.step == args.stop_after_steps:
                os._exit(STOP_EXIT_CODE)  # debugging: die here like a killed run (no cleanup)
            step_start = time.perf_counter()  # logging, evaluation and saving are not training time
            if last_step:
                break
        epoch += 1
    progress.close()
    if out_of_time:
        accelerator.print(f"--max_train_seconds {args.max_train_seconds:g}: stopped after {state.step} of "
                          f"{args.max_steps} steps ({state.elapsed_seconds:.0f} s of training)")

    # 8. the final model, with its model card
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and baseline:
        from benchmarks.baseline import ar_model_card

        card = ar_model_card(
            num_parameters=num_parameters, config=config, tokenizer=tokenizer, dataset=args.dataset,
            train_songs=len(train_rows), validation_songs=len(validation_rows), steps=state.step,
            seconds=state.elapsed_seconds, tokens=state.tokens, train_loss=last_train.get("train/loss"),
            eval_loss=last_eval.get("eval/loss"),
            validation_windows=len(eval_dataloader.dataset) if eval_dataloader is not None else None,
            max_steps=args.max_steps, max_train_seconds=args.max_train_seconds,
            hyperparameters={
                "processes": accelerator.num_processes,
                "batch size per process": args.batch_size,
                "gradient accumulation steps": args.gradient_accumulation_steps,
                "num_bars": args.num_bars,
                "max_shift": args.max_shift,
                "max_tokens": args.max_tokens,
                "learning rate": args.learning_rate,
                "min_lr_ratio": args.min_lr_ratio,
                "warmup_steps": args.warmup_steps,
                "max_steps (schedule)": args.max_steps,
                "max_train_seconds": args.max_train_seconds or "none",
                "betas": " / ".join(str(b) for b in args.betas),
                "weight decay": args.weight_decay,
                "max_grad_norm": args.max_grad_norm,
                "mixed precision": str(accelerator.mixed_precision),
                "seed": args.seed,
            },
            command=command_line(accelerator.num_processes),
        )
        final_model = accelerator.unwrap_model(model)
        final_model.generation_config = default_generation_config(config)
        path = save_final(final_model, card, output_dir, tokenizer=tokenizer)
        accelerator.print(f"saved {path} ({state.step} steps, {state.elapsed_seconds:.0f} s)")
    elif accelerator.is_main_process:
        card = model_card(
            config=config,
            num_parameters=num_parameters,
            dataset=args.dataset,
            train_songs=len(train_rows),
            validation_songs=len(validation_rows),
            steps=state.step,
            seconds=state.elapsed_seconds,
            tokens=state.tokens,
            train_losses={k.removeprefix("train/"): v for k, v in last_train.items() if k.startswith("train/")},
            eval_losses={k.removeprefix("eval/"): v for k, v in last_eval.items()},
            hyperparameters={
                "processes": accelerator.num_processes,
                "batch size per process": args.batch_size,
                "gradient accumulation steps": args.gradient_accumulation_steps,
                "effective batch size": args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes,
                "num_bars": args.num_bars,
                "max_shift": args.max_shift,
                "learning rate": args.learning_rate,
                "min_lr_ratio": args.min_lr_ratio,
                "warmup_steps": args.warmup_steps,
                "betas": " / ".join(str(b) for b in args.betas),
                "weight decay": args.weight_decay,
                "max_grad_norm": args.max_grad_norm,
                "initialised from": args.init_from or (f"{args.warm_start} (matching tensors)" if args.warm_start
                                                       else "random weights"),
                "frozen levels": ", ".join(args.freeze) if args.freeze else "none",
                "structure_warmup_steps": args.structure_warmup_steps,
                "structure_ramp_steps": args.structure_ramp_steps,
                "mixed precision": str(accelerator.mixed_precision),
                "seed": args.seed,
            },
            command=command_line(accelerator.num_processes),
        )
        final_model = accelerator.unwrap_model(model)
        final_model.generation_config = with_song_priors(final_model.generation_config, train_rows,
                                                         getattr(final_model.config, "levels", ()))
        path = save_final(final_model, card, output_dir)
        accelerator.print(f"saved {path} ({state.step} steps, {state.elapsed_seconds:.0f} s)")
    accelerator.wait_for_everyone()  # no process leaves while the main one still saves
    accelerator.end_training()
    if torch.distributed.is_initialized():
        # DDP's reducer holds the process group; released on one process after the other has
        # gone, gloo's destructor can wait for ever on its peer. Release it everywhere, together.
        model = optimizer = lr_scheduler = None
        accelerator.free_memory()  # its own references, then a garbage collection
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train FractalMIDI with Accelerate (python train_accelerate.py ... or accelerate launch train_accelerate.py ...).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None,
                   help="model config JSON (hub_configs/tiny.json, small, base, large); required unless --init_from")
    p.add_argument("--freeze", nargs="+", choices=("structure", "chords", "harmony", "melody", "notes"), default=None,
                   help="levels whose weights stay as they are (e.g. fine-tune the note level alone: "
                        "--freeze structure harmony)")
    p.add_argument("--warm_start", default=None, metavar="DIR",
                   help="with --config: copy the weights of a saved model folder whose names and shapes match "
                        "(a larger hierarchy grown from a trained one); the rest start fresh")
    p.add_argument("--init_from", default=None,
                   help="fine-tune: start from the weights and config of a saved model folder (save_pretrained) "
                        "instead of random weights; the optimizer and schedule start fresh")
    p.add_argument("--dataset", required=True, help="a dataset folder from `fractalmidi build-dataset`, or a Hub dataset id")
    p.add_argument("--output_dir", required=True, help="checkpoints, training_log.jsonl and the final model go here")
    # data
    p.add_argument("--num_bars", type=int, default=8, help="bars per training window")
    p.add_argument("--max_shift", type=int, default=5, help="largest random transposition, semitones")
    p.add_argument("--max_tokens", type=int, default=3072,
                   help="the autoregressive baseline only: tokens per training window (BOS and REMI), the rest cut off")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    # optimisation
    p.add_argument("--batch_size", type=int, default=8, help="windows per batch, per process")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--max_steps", type=int, default=10000, help="optimizer steps of the whole run")
    p.add_argument("--max_train_seconds", type=float, default=None,
                   help="also stop (checkpoint, final model) once this many seconds of training are done: "
                        "a wall-clock budget (the learning-rate schedule still runs to --max_steps)")
    p.add_argument("--learning_rate", type=float, default=1e-4, help="peak learning rate (AdamW)")
    p.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.95])
    p.add_argument("--weight_decay", type=float, default=0.01, help="on weight matrices only")
    p.add_argument("--warmup_steps", type=int, default=500, help="linear learning-rate warmup")
    p.add_argument("--min_lr_ratio", type=float, default=0.1, help="the cosine decays to learning_rate times this")
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--structure_warmup_steps", type=int, default=5000, help="steps with structure loss weight 0")
    p.add_argument("--structure_ramp_steps", type=int, default=1000, help="then steps to ramp it linearly to 1")
    p.add_argument("--mixed_precision", choices=["no", "bf16"], default=None,
                   help="default: bf16 on a CUDA device that has it, else no (on a CPU bf16 must be asked for)")
    p.add_argument("--seed", type=int, default=0)
    # evaluation, logging, checkpoints
    p.add_argument("--logging_steps", type=int, default=10, help="log the mean of the losses every N steps")
    p.add_argument("--eval_steps", type=int, default=500, help="validation loss every N steps (0: never)")
    p.add_argument("--eval_batch_size", type=int, default=None, help="default: --batch_size")
    p.add_argument("--eval_max_windows", type=int, default=512, help="validation windows used (evenly spaced)")
    p.add_argument("--log_with", default="auto", help="accelerate tracker: auto (tensorboard when installed), none, tensorboard, wandb, ...")
    p.add_argument("--checkpointing_steps", type=int, default=None, help="save_state every N steps")
    p.add_argument("--keep_checkpoints", type=int, default=2, help="checkpoints kept (the latest)")
    p.add_argument("--resume", default=None, help="auto (the latest checkpoint in output_dir, if any) or a checkpoint folder")
    p.add_argument("--stop_after_steps", type=int, default=None,
                   help=f"debugging: exit abruptly (status {STOP_EXIT_CODE}, no cleanup) after this step, as a killed run would")
    args = p.parse_args(argv)
    for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "num_bars", "logging_steps", "max_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    for name in ("warmup_steps", "structure_warmup_steps", "structure_ramp_steps", "eval_steps", "max_shift", "num_workers", "keep_checkpoints"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be at least 0")
    if args.checkpointing_steps is not None and args.checkpointing_steps < 1:
        p.error("--checkpointing_steps must be at least 1")
    if args.max_train_seconds is not None and args.max_train_seconds <= 0:
        p.error("--max_train_seconds must be more than 0")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        p.error("--min_lr_ratio must lie in 0-1")
    if args.mixed_precision is None:
        args.mixed_precision = default_mixed_precision()
    return args


def load_config(path):
    """The model config of a JSON file: FractalMIDI's, or a Llama config for the autoregressive
    baseline (`"model_type": "llama"`, see hub_configs/ar_baseline.json)."""
    try:
        model_type = json.loads(Path(path).read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        fail(f"{path}: not a model config JSON file ({e})")
    if model_type == "llama":
        from transformers import LlamaConfig

        return LlamaConfig.from_json_file(path)
    if model_type not in (None, "fractalmidi"):
        fail(f"{path}: model_type {model_type!r}; this script trains fractalmidi models and the llama baseline")
    return FractalMIDIConfig.from_json_file(path)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.init_from:
        if args.config:
            fail("give --config or --init_from, not both: a fine-tuned model keeps the config it was saved with")
        path = Path(args.init_from)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            fail(f"--init_from {args.init_from}: not a saved model folder (config.json and model.safetensors)")
        config = load_config(path / "config.json")
        if args.warm_start:
            fail("--warm_start goes with --config (a new config); --init_from already starts from a saved model")
    elif args.config:
        if args.warm_start and not (Path(args.warm_start) / "model.safetensors").is_file():
            fail(f"--warm_start {args.warm_start}: no model.safetensors there (a saved model folder)")
        config = load_config(args.config)
    else:
        fail("give --config (a model config JSON) or --init_from (a saved model folder)")
    training_function(config, args)


if __name__ == "__main__":
    main()
