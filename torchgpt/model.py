"""The book's GPT-2 in PyTorch (chapter 4), with the book's class, attribute, buffer and config
names, so ``GPTModel(GPT_CONFIG_124M).state_dict()`` has the project's parameter vocabulary.

The math is the book's, line for line in meaning: tanh GELU, LayerNorm with the biased variance,
masked_fill(-inf) before the 1/sqrt(head_dim) scaling, dropout on the attention weights and on
the shortcut path. Shapes: B batch, T tokens, C emb_dim, H heads, D head_dim, V vocab_size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the book's and torch's own spelling
from torch import nn

from npgpt.config import GPTConfig, as_config


class LayerNorm(nn.Module):
    def __init__(self, emb_dim: int) -> None:
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (B, T, 1)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # (B, T, 1), biased as in the book
        norm_x = (x - mean) / torch.sqrt(var + self.eps)  # (B, T, C)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The book builds sqrt(2/pi) with torch.tensor(2.0 / torch.pi), a float32 constant even
        # for a float64 model (a 1e-8 relative error the float64 parity tier would see). Making
        # the constant in x's dtype gives the book's value in float32 and the exact one in float64.
        c = torch.sqrt(torch.tensor(2.0 / torch.pi, dtype=x.dtype, device=x.device))
        return 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class MultiHeadAttention(nn.Module):
    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out={d_out} must be divisible by num_heads={num_heads}")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
        # Opt-in fast path, not part of the book: "sdpa" calls F.scaled_dot_product_attention
        # (flash attention on GPUs) with the same math and the same parameters.
        self.attn_impl = "book"

    def forward(self, x: torch.Tensor, kv_cache: LayerKVCache | None = None) -> torch.Tensor:
        b, num_tokens, _ = x.shape
        keys = self.W_key(x)  # (B, T, C)
        queries = self.W_query(x)
        values = self.W_value(x)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        if kv_cache is not None:  # generation: attend to every cached position too
            keys, values = kv_cache.append(keys, values)  # (B, H, S, D)
        num_keys = keys.shape[2]

        if self.attn_impl == "sdpa":
            # the causal mask for queries at positions S - T ... S - 1 (bottom-right aligned)
            mask_bool = self.mask.bool()[num_keys - num_tokens : num_keys, :num_keys]
            context_vec = F.scaled_dot_product_attention(
                queries,
                keys,
                values,
                attn_mask=None if num_tokens == num_keys else ~mask_bool,
                is_causal=num_tokens == num_keys,
                dropout_p=self.dropout.p if self.training else 0.0,
            )  # (B, H, T, D)
        else:
            attn_scores = queries @ keys.transpose(2, 3)  # (B, H, T, S)
            mask_bool = self.mask.bool()[num_keys - num_tokens : num_keys, :num_keys]
            attn_scores.masked_fill_(mask_bool, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context_vec = attn_weights @ values  # (B, H, T, D)

        context_vec = context_vec.transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # (B, T, C)
        return self.out_proj(context_vec)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x: torch.Tensor, kv_cache: LayerKVCache | None = None) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        x = self.att(x, kv_cache)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):
    def __init__(self, cfg: dict[str, Any] | GPTConfig) -> None:
        super().__init__()
        cfg = as_config(cfg).to_dict()  # an unknown key or bad value: one-line NpgptError
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        _batch_size, seq_len = in_idx.shape
        start = 0 if kv_cache is None else kv_cache.length  # position of in_idx[:, 0]
        tok_embeds = self.tok_emb(in_idx)  # (B, T, C)
        pos_embeds = self.pos_emb(torch.arange(start, start + seq_len, device=in_idx.device))  # (T, C)
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        if kv_cache is None:
            x = self.trf_blocks(x)
        else:
            for block, layer_cache in zip(self.trf_blocks, kv_cache.layers, strict=True):
                x = block(x, layer_cache)
        x = self.final_norm(x)
        return self.out_head(x)  # (B, T, V)


def config_of(model: GPTModel) -> GPTConfig:
    """The configuration a GPTModel was built with, read back from its modules."""
    att = model.trf_blocks[0].att
    return GPTConfig(
        vocab_size=model.tok_emb.num_embeddings,
        context_length=model.pos_emb.num_embeddings,
        emb_dim=model.tok_emb.embedding_dim,
        n_heads=att.num_heads,
        n_layers=len(model.trf_blocks),
        drop_rate=att.dropout.p if hasattr(att.dropout, "p") else 0.0,
        qkv_bias=att.W_query.bias is not None,
    )


class LayerKVCache:
    """Keys and values of one attention layer, preallocated to the context length."""

    def __init__(self, b: int, num_heads: int, context_length: int, head_dim: int, like: torch.Tensor) -> None:
        shape = (b, num_heads, context_length, head_dim)
        self.keys = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.values = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + keys.shape[2]
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Per-layer KV caches of a GPTModel for incremental generation."""

    def __init__(self, model: GPTModel, batch_size: int) -> None:
        att = model.trf_blocks[0].att
        like = model.out_head.weight
        context_length = model.pos_emb.num_embeddings
        self.layers = [
            LayerKVCache(batch_size, att.num_heads, context_length, att.head_dim, like) for _ in model.trf_blocks
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0


def set_attention(model: GPTModel, impl: str) -> GPTModel:
    """Switch every attention layer between the book's math ("book") and SDPA ("sdpa")."""
    if impl not in ("book", "sdpa"):
        raise ValueError(f"unknown attention implementation {impl!r}; use 'book' or 'sdpa'")
    for block in model.trf_blocks:
        block.att.attn_impl = impl
    return model
