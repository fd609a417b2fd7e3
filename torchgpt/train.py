"""Chapter 5's training functions and appendix D's ``train_model``, with the book's names and
signatures, plus opt-in speed-ups (autocast, gradient accumulation) that leave the math alone.

Deviation from the printed appendix D listing, on purpose (documented in docs/torchgpt.md):
the listing reads its peak lr from the optimizer, whose lr its own schedule overwrites and
whose lr the book never sets (so the peak silently becomes AdamW's default 1e-3), and it clips
only when ``global_step > warmup_steps``, skipping the first post-warmup step. Here ``peak_lr``
can be passed explicitly (default: the optimizer's lr before training starts, which is the
intent) and clipping starts at ``global_step >= warmup_steps``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import tiktoken
import torch
from torch.utils.data import DataLoader

from npgpt.errors import NpgptError, diverged
from npgpt.tokenizer import text_to_token_ids as _np_text_to_ids
from torchgpt.generation import generate_text_simple


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding) -> torch.Tensor:
    """text -> (1, T) int64 tensor."""
    return torch.from_numpy(_np_text_to_ids(text, tokenizer))


def token_ids_to_text(token_ids: torch.Tensor, tokenizer: tiktoken.Encoding) -> str:
    """(1, T) or (T,) tensor -> text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def warmup_cosine_lr(
    global_step: int, peak_lr: float, total_training_steps: int, warmup_steps: int, initial_lr: float, min_lr: float
) -> float:
    """Appendix D's learning rate, computed as the book's loop does (torchgpt's own copy: the
    check compares it with npgpt.schedule): a linear ramp by a fixed increment, then a cosine."""
    if global_step < warmup_steps:
        lr_increment = (peak_lr - initial_lr) / warmup_steps
        return initial_lr + global_step * lr_increment
    progress = (global_step - warmup_steps) / max(total_training_steps - warmup_steps, 1)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def calc_loss_batch(
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    model: torch.nn.Module,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of one batch (``amp_dtype``: opt-in autocast, e.g. torch.bfloat16)."""
    device = torch.device(device)
    input_batch = input_batch.to(device, non_blocking=True)
    target_batch = target_batch.to(device, non_blocking=True)
    with _autocast(device, amp_dtype):
        logits = model(input_batch)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the loss of an autocast forward in float32; a float64 model keeps float64
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(
    data_loader: DataLoader, model: torch.nn.Module, device: torch.device | str, num_batches: int | None = None
) -> float:
    """Average loss over the first ``num_batches`` batches (all when None); NaN for an empty loader."""
    total_loss = 0.0
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total_loss / num_batches


def evaluate_model(
    model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, device: torch.device | str, eval_iter: int
) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(
    model: torch.nn.Module,
    tokenizer: tiktoken.Encoding,
    device: torch.device | str,
    start_context: str,
    max_new_tokens: int = 50,
    log: Callable[[str], None] = print,
) -> str:
    model.eval()
    raw = getattr(model, "module", model)  # unwrap DDP
    context_size = raw.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate_text_simple(raw, encoded, max_new_tokens, context_size)
    text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    log(text)
    model.train()
    return text


def train_model_simple(
    model: torch.nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: tiktoken.Encoding,
) -> tuple[list[float], list[float], list[int]]:
    """Chapter 5's loop: constant lr, no clipping. Returns train losses, val losses, tokens seen."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


def train_model(
    model: torch.nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    n_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: tiktoken.Encoding,
    warmup_steps: int,
    initial_lr: float = 3e-05,
    min_lr: float = 1e-6,
    *,
    peak_lr: float | None = None,
    schedule: str = "cosine",
    grad_clip: float | None = 1.0,
    accumulation_steps: int = 1,
    amp_dtype: torch.dtype | None = None,
    max_steps: int | None = None,
    start_step: int = 0,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = print,
    sample_tokens: int = 50,
    on_eval: Callable[[int, dict[str, list]], None] | None = None,
    on_diverge: Callable[[str, float, int], Exception] | None = None,
) -> tuple[list[float], list[float], list[int], list[float]]:
    """Appendix D's loop: linear warmup, cosine decay, gradient clipping (see module docstring
    for the two fixes). Returns train losses, val losses, tokens seen and the lr of every step.

    Opt-in: ``accumulation_steps`` micro-batches per optimizer step (the loss of each is
    divided by it, so the update equals one step on the concatenated batch);
    ``amp_dtype=torch.bfloat16`` autocast; ``schedule="constant"`` + ``grad_clip=None`` is
    chapter 5. ``start_step`` skips that many optimizer steps (their batches are drawn, not
    used): with a DistributedSampler, whose order is a function of (seed, epoch), and the RNG
    state restored, that resumes a run exactly.
    ``max_steps`` or ``should_stop()`` (checked after every step, e.g. set by Ctrl-C) stop early;
    ``log=None`` silences output (non-zero DDP ranks). ``on_eval(next_step, history)`` runs after
    every evaluation (the command line saves a checkpoint there). A non-finite loss or gradient
    norm stops the run before the optimizer step with ``on_diverge(what, value, step)``'s error
    (default: an NpgptError naming the step).
    """
    if schedule not in ("cosine", "constant"):
        raise NpgptError(f"unknown schedule {schedule!r}; use 'cosine' or 'constant'")
    if accumulation_steps < 1:
        raise NpgptError(f"accumulation_steps={accumulation_steps} must be at least 1")
    device = torch.device(device)
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"] if peak_lr is None else peak_lr
    steps_per_epoch = len(train_loader) // accumulation_steps
    total_training_steps = steps_per_epoch * n_epochs
    if total_training_steps == 0:
        raise NpgptError("the training set has no batches; use a longer text or a smaller context/batch size")
    say = log or (lambda s: None)
    diverge = on_diverge or (lambda what, value, step: diverged(what, value, step, None, None))
    train_seconds, train_tokens = 0.0, 0
    model.train()
    for epoch in range(n_epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # DistributedSampler: a new shuffle each epoch
        batches = iter(train_loader)
        for _ in range(steps_per_epoch):
            micro = [next(batches) for _ in range(accumulation_steps)]
            global_step += 1
            if global_step < start_step:
                tokens_seen += sum(x.numel() for x, _ in micro)
                continue
            t0 = time.perf_counter()
            if schedule == "cosine":
                lr = warmup_cosine_lr(global_step, peak_lr, total_training_steps, warmup_steps, initial_lr, min_lr)
            else:
                lr = peak_lr
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for input_batch, target_batch in micro:
                loss = calc_loss_batch(input_batch, target_batch, model, device, amp_dtype) / accumulation_steps
                loss.backward()
                step_loss += loss.item()
            if grad_clip is not None and global_step >= warmup_steps:
                norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip))  # pre-clip
            else:  # the same global norm, without clip_grad_norm_'s multiply-by-1 pass over every gradient
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            for what, value in (("the training loss", step_loss), ("the gradient norm", norm)):
                if not math.isfinite(value):
                    raise diverge(what, value, global_step)
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - t0
            n_tokens = sum(x.numel() for x, _ in micro)
            train_tokens += n_tokens
            tokens_seen += n_tokens
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                if not math.isfinite(train_loss):
                    raise diverge("the evaluated training loss", train_loss, global_step)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                say(
                    f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                    f" | lr {lr:.2e} | train {train_tokens / max(train_seconds, 1e-9):,.0f} tok/s"
                )
                if on_eval is not None:
                    history = {"train_losses": train_losses, "val_losses": val_losses,
                               "tokens_seen": track_tokens_seen, "lrs": track_lrs}  # fmt: skip
                    on_eval(global_step + 1, history)
            if (max_steps is not None and global_step + 1 - start_step >= max_steps) or (
                should_stop is not None and should_stop()
            ):
                return train_losses, val_losses, track_tokens_seen, track_lrs
        if log is not None and global_step >= start_step:
            generate_and_print_sample(model, tokenizer, device, start_context, sample_tokens, log)
    return train_losses, val_losses, track_tokens_seen, track_lrs
