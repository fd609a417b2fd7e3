"""``npgpt train`` and ``npgpt generate`` with ``--impl numpy`` (the default): npgpt's trainer,
checkpoints and KV-cache generation."""

from __future__ import annotations

import argparse

import numpy as np

from npgpt.checkpoint import load_checkpoint
from npgpt.config import GPTConfig
from npgpt.data import create_dataloader_v1, train_val_split
from npgpt.files import check_output_dir
from npgpt.generation import generate
from npgpt.model import GPTModel
from npgpt.optim import AdamW
from npgpt.tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text
from npgpt.train import TrainState, load_training, train_model
from npgpt.workspace import Workspace
from parity.cli.runs import (
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

CHECKPOINT = "checkpoint.npz"


def run_train(args: argparse.Namespace, save_on_eval: bool = True) -> int:
    """``save_on_eval``: a checkpoint at every evaluation (the demo saves once, at the end)."""
    run = start_training(args, CHECKPOINT)
    if args.resume:
        model, optimizer, state, meta = load_training(run.ckpt)
        run.resume(args, meta)  # the same text, the run's own hyperparameters
        print(f"resuming {run.ckpt} at step {state.global_step + 2} (epoch {state.epoch + 1})")
    else:
        cfg = GPTConfig.preset(args.config, **config_overrides(args))
        model = GPTModel(cfg, seed=args.seed, dtype=np.dtype(args.dtype))
        optimizer = AdamW(model.params, lr=args.lr, weight_decay=args.weight_decay)
        state = TrainState()
    model.attention = "blocked" if args.attention == "blocked" else "plain"  # the same math, chosen per call
    model.workspace = Workspace()  # each step's gradients into the last step's arrays (npgpt/workspace.py)
    cfg = model.cfg
    tokenizer = get_tokenizer(cfg.vocab_size)  # GPT-2's, or its first merges for a small vocabulary
    check_output_dir(run.out, 3 * model.num_params() * model.dtype.itemsize)  # params, AdamW m and v
    train_text, val_text = train_val_split(run.text)
    T = cfg.context_length
    train_loader = create_dataloader_v1(
        train_text, args.batch_size, T, T, True, True, seed=args.seed, tokenizer=tokenizer
    )
    val_loader = create_dataloader_v1(
        val_text, args.batch_size, T, T, False, False, seed=args.seed, tokenizer=tokenizer
    )
    if len(train_loader) == 0:
        raise too_short(T, args.batch_size)
    print(
        f"{cfg.n_layers} layers, {model.num_params():,} parameters ({model.dtype}); "
        f"{len(train_loader)} train / {len(val_loader)} val batches of {args.batch_size}x{T} tokens"
    )
    with stop_on_signals() as should_stop:
        state = train_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            args.epochs,
            args.eval_freq,
            args.eval_iter,
            args.start_context,
            tokenizer,
            args.warmup_steps,
            args.initial_lr,
            args.min_lr,
            peak_lr=args.lr,
            schedule=args.schedule,
            grad_clip=args.grad_clip,
            state=state,
            checkpoint_path=run.ckpt,
            max_steps=args.max_steps,
            should_stop=should_stop,
            sample_tokens=args.sample_tokens,
            meta=run.meta(args),
            save_on_eval=save_on_eval,
        )
    history = {
        "train_losses": state.train_losses,
        "val_losses": state.val_losses,
        "tokens_seen": state.track_tokens_seen,
        "lrs": state.track_lrs,
    }
    finish_run(args, history, len(train_loader), state.global_step + 1, run.ckpt)
    return should_stop.exit_code


def run_generate(args: argparse.Namespace) -> int:
    check_generate_args(args)
    cfg, params, _, _ = load_checkpoint(args.checkpoint)
    bad = sum(int(np.count_nonzero(~np.isfinite(v))) for v in params.values())
    refuse_nonfinite(args.checkpoint, bad)
    model = GPTModel(cfg, params=params).eval()
    tokenizer = get_tokenizer(cfg.vocab_size)
    ids = text_to_token_ids(args.prompt, tokenizer)
    with streamed(tokenizer, token_ids_to_text(ids, tokenizer)) as printer:  # each token as it comes
        generate(
            model,
            ids,
            args.max_new_tokens,
            cfg.context_length,
            rng=np.random.default_rng(args.seed),
            on_token=printer,
            **sampling(args, tokenizer),
        )
    return 0
