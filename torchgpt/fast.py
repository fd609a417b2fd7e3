"""Opt-in speed-ups that keep the book's state_dict and math (each is tested against the book
path in float32, see tests/torchgpt/test_model.py):

- ``set_attention(model, "sdpa")``: F.scaled_dot_product_attention (flash attention on GPUs);
- ``make_adamw(..., fused=True)``: one fused kernel for the whole AdamW step;
- ``enable_tf32()``: TF32 tensor cores for float32 matmuls (training only: it changes results
  at the 1e-3 level, so parity runs keep it off);
- ``train_model(..., amp_dtype=torch.bfloat16)``: bf16 autocast; ``accumulation_steps``;
- ``torch.compile`` through ``compile_model``; pinned memory through ``create_dataloader_v1``.
"""

from __future__ import annotations

import torch

from torchgpt.model import GPTModel, set_attention

__all__ = ["compile_model", "enable_tf32", "make_adamw", "set_attention"]


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """The book's AdamW over all parameters; ``fused=True`` uses the single-kernel implementation."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)


def enable_tf32(enabled: bool = True) -> None:
    """Let float32 matmuls and convolutions use TF32 on Ampere and newer GPUs."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")


def compile_model(model: GPTModel) -> torch.nn.Module:
    """``torch.compile`` the model; the returned module shares the parameters (``_orig_mod``)."""
    return torch.compile(model)
