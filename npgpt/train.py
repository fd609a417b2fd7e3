"""Chapter 5's training loop and appendix D's extras (warmup, cosine decay, gradient clipping),
with the book's function names, plus resumable checkpoints.

A run is a pure function of its inputs: the data order of epoch e comes from (seed, e), dropout
masks from the model's RNG (saved in every checkpoint), so an interrupted run resumed from its
checkpoint ends bit-for-bit where the uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken

from npgpt.checkpoint import load_checkpoint, save_checkpoint
from npgpt.data import DataLoader
from npgpt.errors import NpgptError, diverged
from npgpt.generation import generate
from npgpt.model import GPTModel
from npgpt.optim import AdamW, clip_coef, grad_norm
from npgpt.schedule import lr_at
from npgpt.tokenizer import text_to_token_ids, token_ids_to_text


def calc_loss_batch(input_batch: np.ndarray, target_batch: np.ndarray, model: GPTModel) -> float:
    """Mean cross-entropy of one (B, T) batch."""
    return model.loss(input_batch, target_batch)


def calc_loss_loader(data_loader: DataLoader, model: GPTModel, num_batches: int | None = None) -> float:
    """Average batch loss over the first ``num_batches`` batches (all when None); NaN if empty.

    Uses the loader's epoch-0 order every time, so evaluation is deterministic and does not
    disturb the training order.
    """
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader.batches(0)):
        if i >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model)
    return total / num_batches


def evaluate_model(
    model: GPTModel, train_loader: DataLoader, val_loader: DataLoader, eval_iter: int
) -> tuple[float, float]:
    """Train and validation loss over ``eval_iter`` batches each, in eval mode."""
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, num_batches=eval_iter)
    finally:
        model.train()
    return train_loss, val_loss


def generate_and_print_sample(
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    start_context: str,
    max_new_tokens: int = 50,
    log: Callable[[str], None] = print,
) -> str:
    """Greedy continuation of ``start_context``, printed on one line like the book."""
    encoded = text_to_token_ids(start_context, tokenizer)
    token_ids = generate(model, encoded, max_new_tokens, model.cfg.context_length)
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    log(text)
    return text


@dataclasses.dataclass
class TrainState:
    """Where a run is: everything besides params and optimizer that a resume needs."""

    epoch: int = 0
    batch: int = 0  # next batch index within ``epoch``
    global_step: int = -1  # the book counts from -1 so the first step is 0
    tokens_seen: int = 0
    train_losses: list[float] = dataclasses.field(default_factory=list)
    val_losses: list[float] = dataclasses.field(default_factory=list)
    track_tokens_seen: list[int] = dataclasses.field(default_factory=list)
    track_lrs: list[float] = dataclasses.field(default_factory=list)
    rng_state: dict[str, Any] | None = None
    peak_lr: float | None = None  # fixed at the run's start; the optimizer's lr follows the schedule


def train_model(
    model: GPTModel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: AdamW,
    n_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: tiktoken.Encoding,
    warmup_steps: int = 0,
    initial_lr: float = 3e-5,
    min_lr: float = 1e-6,
    *,
    peak_lr: float | None = None,
    schedule: str = "cosine",
    grad_clip: float | None = 1.0,
    state: TrainState | None = None,
    checkpoint_path: str | Path | None = None,
    max_steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] = print,
    sample_tokens: int = 50,
    meta: dict[str, Any] | None = None,
    save_on_eval: bool = True,
) -> TrainState:
    """Appendix D's ``train_model``: warmup + cosine decay + gradient clipping.

    Differences from the printed listing, on purpose: ``peak_lr`` is explicit (default: the
    optimizer's lr when called, which is what the book meant), and clipping starts at the first
    post-warmup step (``global_step >= warmup_steps``; the listing's ``>`` skips that one step).
    ``schedule="constant"`` with ``grad_clip=None`` is chapter 5's ``train_model_simple``.

    ``state`` resumes a run (see ``load_training``); ``checkpoint_path`` gets a checkpoint after
    every evaluation (unless ``save_on_eval=False``) and at the end (``meta`` is stored with it); ``max_steps`` or
    ``should_stop()`` (checked after every step, e.g. set by Ctrl-C) end the call early after
    saving, and the run continues from that checkpoint. The schedule always spans all epochs.
    """
    if schedule not in ("cosine", "constant"):
        raise NpgptError(f"unknown schedule {schedule!r}; use 'cosine' or 'constant'")
    if eval_freq < 1:
        raise NpgptError(f"eval_freq={eval_freq} must be at least 1")
    if len(train_loader) == 0:
        raise NpgptError("the training set has no batches; use a longer text or a smaller context/batch size")
    state = state or TrainState()
    # The optimizer's lr is overwritten every step, so a resumed run must not read its peak from
    # there (the printed listing's slip): the peak is part of the run's state.
    state.peak_lr = peak_lr or state.peak_lr or optimizer.lr
    peak_lr = state.peak_lr
    total_steps = len(train_loader) * n_epochs
    if state.rng_state is not None:
        model.rng.bit_generator.state = state.rng_state
    steps_this_call = 0
    # steps done (1-based) by the checkpoint on disk, for an honest message if the run diverges
    on_disk = checkpoint_path is not None and Path(checkpoint_path).exists()
    kept_step = state.global_step + 1 if on_disk else None

    def stop(what: str, value: float) -> NpgptError:
        where = str(checkpoint_path) if checkpoint_path else None
        return diverged(what, value, state.global_step + 1, where, kept_step)

    def save() -> None:
        nonlocal kept_step
        if checkpoint_path is not None:
            if not all(np.isfinite(p).all() for p in model.params.values()):
                raise stop("a weight", math.nan)  # never written over the last good checkpoint
            state.rng_state = model.rng.bit_generator.state
            info = {**(meta or {}), "train_state": dataclasses.asdict(state)}
            save_checkpoint(checkpoint_path, model.cfg, model.params, optimizer.state_dict(), info)
            kept_step = state.global_step + 1

    model.train()
    train_seconds, train_tokens = 0.0, 0  # throughput of the optimizer steps alone, not evaluation
    # overflow in a diverging run is caught below as a non-finite loss or gradient norm and
    # reported in one line; NumPy's own warnings would only repeat it, many times over
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while state.epoch < n_epochs:
            for i, (input_batch, target_batch) in enumerate(train_loader.batches(state.epoch)):
                if i < state.batch:
                    continue  # resuming mid-epoch: these batches were already trained on
                t0 = time.perf_counter()
                state.global_step += 1
                if schedule == "cosine":
                    lr = lr_at(
                        state.global_step,
                        peak_lr=peak_lr,
                        total_steps=total_steps,
                        warmup_steps=warmup_steps,
                        initial_lr=initial_lr,
                        min_lr=min_lr,
                    )
                else:
                    lr = peak_lr
                optimizer.lr = lr
                state.track_lrs.append(lr)
                loss, grads = model.loss_and_grads(input_batch, target_batch)
                if not math.isfinite(loss):
                    raise stop("the training loss", loss)
                clip = grad_clip if grad_clip is not None and state.global_step >= warmup_steps else math.inf
                norm = grad_norm(grads)  # the global norm before clipping
                if not math.isfinite(norm):
                    raise stop("the gradient norm", norm)
                # clip_grad_norm's clipping, folded into the update (inf: no clipping)
                optimizer.step(grads, grad_scale=clip_coef(norm, clip))
                train_seconds += time.perf_counter() - t0
                train_tokens += input_batch.size
                state.tokens_seen += input_batch.size
                state.batch = i + 1
                steps_this_call += 1

                if state.global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                    if not math.isfinite(train_loss):  # an empty validation set gives nan on purpose
                        raise stop("the evaluated training loss", train_loss)
                    state.train_losses.append(train_loss)
                    state.val_losses.append(val_loss)
                    state.track_tokens_seen.append(state.tokens_seen)
                    rate = train_tokens / max(train_seconds, 1e-9)
                    log(
                        f"Ep {state.epoch + 1} (Step {state.global_step:06d}): "
                        f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f} | lr {lr:.2e} | train {rate:,.0f} tok/s"
                    )
                    if save_on_eval:
                        save()
                if (max_steps is not None and steps_this_call >= max_steps) or (
                    should_stop is not None and should_stop()
                ):
                    save()
                    return state
            state.epoch += 1
            state.batch = 0
            generate_and_print_sample(model, tokenizer, start_context, sample_tokens, log)
    save()
    return state


def train_model_simple(
    model: GPTModel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: AdamW,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: tiktoken.Encoding,
) -> tuple[list[float], list[float], list[int]]:
    """Chapter 5's loop: constant learning rate, no clipping. Returns the book's three lists."""
    state = train_model(
        model,
        train_loader,
        val_loader,
        optimizer,
        num_epochs,
        eval_freq,
        eval_iter,
        start_context,
        tokenizer,
        schedule="constant",
        grad_clip=None,
    )
    return state.train_losses, state.val_losses, state.track_tokens_seen


def load_training(path: str | Path) -> tuple[GPTModel, AdamW, TrainState, dict[str, Any]]:
    """Rebuild model, optimizer and TrainState from a checkpoint written by ``train_model``."""
    cfg, params, opt_state, meta = load_checkpoint(path)
    if opt_state is None or "train_state" not in meta:
        raise NpgptError(f"{path} holds weights only, no training state; it can be used with generate, not resumed")
    model = GPTModel(cfg, params=params)
    optimizer = AdamW(model.params)
    optimizer.load_state_dict(opt_state)
    state = TrainState(**meta.pop("train_state"))
    return model, optimizer, state, meta
