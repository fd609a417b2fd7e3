"""``npgpt train/generate --impl torch``: the same flags and output as the NumPy runners, on
cpu, cuda or mps, and data-parallel under torchrun."""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from npgpt.config import GPTConfig
from npgpt.data import train_val_split
from npgpt.errors import NpgptError, diverged
from npgpt.files import check_output_dir
from npgpt.tokenizer import get_tokenizer
from parity.cli import torch_flags
from parity.cli.runs import (
    RUN_FLAGS,
    check_generate_args,
    config_overrides,
    finish_run,
    refuse_nonfinite,
    sampling,
    start_training,
    stop_on_signals,
    streamed,
    too_short,
)
from torchgpt import distributed
from torchgpt.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from torchgpt.data import GPTDatasetV1
from torchgpt.device import pick_device
from torchgpt.fast import enable_tf32, make_adamw
from torchgpt.generation import generate
from torchgpt.model import GPTModel, set_attention
from torchgpt.train import text_to_token_ids, token_ids_to_text, train_model

CHECKPOINT = "checkpoint.pth"


def _loaders(
    text: str, cfg: GPTConfig, batch_size: int, seed: int, info: distributed.DistInfo, pin: bool, accum: int = 1
):
    if batch_size % (info.world_size * accum):
        raise NpgptError(
            f"--batch-size {batch_size} must be divisible by "
            f"{info.world_size} torchrun processes x {accum} micro-batches"
        )
    train_text, val_text = train_val_split(text)
    T = cfg.context_length
    tok = get_tokenizer(cfg.vocab_size)
    train_set = GPTDatasetV1(train_text, tok, T, T)
    # The sampler's order is a function of (seed, epoch) only: the same with 1 or N processes
    # (each rank takes every N-th index) and after a resume.
    sampler = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
    )
    per_rank = batch_size // info.world_size // accum  # one micro-batch of one rank
    # Own generators: iterating a loader must not draw from the global RNG that dropout uses,
    # or a resumed run (which iterates a different number of times) would see other masks.
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, per_rank, sampler=sampler, drop_last=True, pin_memory=pin, generator=gen)
    val_set = GPTDatasetV1(val_text, tok, T, T)
    val_loader = DataLoader(val_set, batch_size, shuffle=False, drop_last=False, generator=gen)
    return train_loader, val_loader


def run_train(args: argparse.Namespace, save_on_eval: bool = True) -> int:
    """``save_on_eval``: a checkpoint at every evaluation (the demo saves once, at the end)."""
    run = start_training(args, CHECKPOINT)
    device = pick_device(args.device)
    info = distributed.setup(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    out, ckpt = run.out, run.ckpt
    say = print if info.is_main else None
    state = None
    if args.resume:
        state = load_checkpoint(ckpt)
        if not {"args", "next_step", "optimizer_state_dict"} <= state.keys():
            raise NpgptError(f"{ckpt} holds weights only, no training state; use it with generate, not --resume")
        run.resume(args, state)
    cfg = GPTConfig.preset(args.config, **config_overrides(args))
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    speed = {k: getattr(args, k, None) for k in torch_flags.NAMES}
    accum = speed["grad_accum"] or 1
    torch.manual_seed(args.seed)
    model = GPTModel(cfg).to(device=device, dtype=dtype)
    if speed["attention"] == "sdpa":
        set_attention(model, "sdpa")
    if speed["tf32"]:
        enable_tf32()
    optimizer = make_adamw(model, args.lr, args.weight_decay, fused=bool(speed["fused_adamw"]))
    history = {"train_losses": [], "val_losses": [], "tokens_seen": [], "lrs": []}
    start_step = 0
    if state is not None:
        load_model_state(model, state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
        history, start_step = state["history"], state["next_step"]
        torch.set_rng_state(state["rng_state"])
        if say:
            say(f"resuming {ckpt} at step {start_step + 1}")
    train_loader, val_loader = _loaders(run.text, cfg, args.batch_size, args.seed, info, device.type == "cuda", accum)
    if len(train_loader) < accum:
        raise too_short(cfg.context_length, args.batch_size)
    if say:
        n = sum(p.numel() for p in model.parameters())
        say(
            f"{cfg.n_layers} layers, {n:,} parameters ({args.dtype}, torch on {device}"
            f"{f', DDP over {info.world_size} process(es), {info.backend}' if info.enabled else ''}); "
            f"{len(train_loader)} train / {len(val_loader)} val batches of "
            f"{args.batch_size}x{cfg.context_length} tokens"
        )
    n_params = sum(p.numel() for p in model.parameters())
    if info.is_main:
        check_output_dir(out, 3 * n_params * model.out_head.weight.element_size())  # params, AdamW m and v
    trained = DistributedDataParallel(model) if info.enabled else model
    if speed["compile"]:
        trained = torch.compile(trained)
    meta = run.meta(args, (*RUN_FLAGS, *torch_flags.NAMES)) | {"config": cfg.to_dict()}

    kept_step = start_step if state is not None else None  # the checkpoint on disk, for honest messages

    def save(next_step: int, hist: dict) -> None:
        nonlocal kept_step
        if info.is_main:  # only rank 0 writes
            rng = torch.get_rng_state()
            save_checkpoint(ckpt, model, optimizer, history=hist, next_step=next_step, rng_state=rng, **meta)
            kept_step = next_step

    def merged(new: dict) -> dict:
        return {k: history[k] + new[k] for k in ("train_losses", "val_losses", "tokens_seen", "lrs")}

    def on_diverge(what: str, value: float, step: int) -> NpgptError:
        return diverged(what, value, step + 1, str(ckpt), kept_step)

    # Ctrl-C or SIGTERM saves and stops a single process; under torchrun the ranks must stop
    # together, so there the signals keep torchrun's meaning (abort) and --max-steps pauses.
    with contextlib.nullcontext(None) if info.enabled else stop_on_signals() as should_stop:
        train_losses, val_losses, tokens_seen, lrs = train_model(
            trained,
            train_loader,
            val_loader,
            optimizer,
            device,
            args.epochs,
            args.eval_freq,
            args.eval_iter,
            args.start_context,
            get_tokenizer(cfg.vocab_size),
            args.warmup_steps,
            args.initial_lr,
            args.min_lr,
            peak_lr=args.lr,
            schedule=args.schedule,
            grad_clip=args.grad_clip,
            accumulation_steps=accum,
            amp_dtype=torch.bfloat16 if speed["amp"] == "bf16" else None,
            max_steps=args.max_steps,
            start_step=start_step,
            should_stop=should_stop,
            log=say,
            sample_tokens=args.sample_tokens,
            on_eval=(lambda next_step, new: save(next_step, merged(new))) if save_on_eval else None,
            on_diverge=on_diverge,
        )
    done_steps = start_step + len(lrs)
    history = merged({"train_losses": train_losses, "val_losses": val_losses, "tokens_seen": tokens_seen, "lrs": lrs})
    save(done_steps, history)
    distributed.teardown()
    if not info.is_main:
        return 0
    finish_run(args, history, len(train_loader) // accum, done_steps, ckpt)
    return 0 if should_stop is None else should_stop.exit_code


def run_generate(args: argparse.Namespace) -> int:
    check_generate_args(args)
    device = pick_device(args.device)
    state = load_checkpoint(args.checkpoint, map_location=device)
    if "config" not in state:
        raise NpgptError(f"{args.checkpoint} has no config record; it was not written by `npgpt train --impl torch`")
    cfg = GPTConfig.from_dict(state["config"])
    model = GPTModel(cfg)
    load_model_state(model, state["model_state_dict"])
    bad = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters())
    refuse_nonfinite(args.checkpoint, bad)
    model.to(device).eval()
    tokenizer = get_tokenizer(cfg.vocab_size)
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=device).manual_seed(args.seed)
    ids = text_to_token_ids(args.prompt, tokenizer).to(device)
    with streamed(tokenizer, token_ids_to_text(ids.cpu(), tokenizer)) as printer:  # each token as it comes
        generate(
            model,
            ids,
            args.max_new_tokens,
            cfg.context_length,
            generator=generator,
            on_token=printer,
            **sampling(args, tokenizer),
        )
    return 0
