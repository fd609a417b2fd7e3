"""What a step costs on paper, to hold the measured numbers against: FLOPs per token (MFU's
numerator) and npgpt's float32 train-step memory counted array by array."""

from __future__ import annotations

from npgpt.config import GPTConfig

PRESETS = {"tiny": "tiny", "124M": "gpt2-small", "355M": "gpt2-medium"}


def flops_per_token(cfg: GPTConfig, T: int, train: bool) -> float:
    """Useful FLOPs: the weight matmuls, and attention's QK^T and P·V over the keys a token may
    see: (T + 1) / 2 of them on average under the causal mask, not T. The masked half is not
    useful work, whether an implementation computes it (the plain layer) or skips it (blocked)."""
    n_matmul = 12 * cfg.n_layers * cfg.emb_dim**2 + cfg.vocab_size * cfg.emb_dim
    fwd = 2 * n_matmul + 2 * cfg.n_layers * cfg.emb_dim * (T + 1)
    return 3 * fwd if train else fwd


def train_bytes_on_paper(cfg: GPTConfig, B: int, T: int) -> int:
    """npgpt's float32 train step counted on paper: params, grads, AdamW m and v, plus what the
    layer caches keep for backward (array by array) and the head's logits/probs/dlogits."""
    from npgpt.params import num_params

    C, H, V, F, L = cfg.emb_dim, cfg.n_heads, cfg.vocab_size, 4 * cfg.emb_dim, cfg.n_layers
    btc, bhtt, btf = B * T * C, B * H * T * T, B * T * F
    # per block: norm1 (norm_x, out), q/k/v, weights before/after dropout, context, residual,
    # norm2 (norm_x, out), ff hidden/tanh/gelu out, block output; bool masks 1 byte each
    floats = 2 * btc + 3 * btc + 2 * bhtt + btc + btc + 2 * btc + 3 * btf + btc
    bools = bhtt + 3 * btc
    return 4 * 4 * num_params(cfg) + L * (4 * floats + bools) + 4 * (2 * btc + 3 * B * T * V)
