"""The catalog of classic mistakes in a from-scratch GPT-2, each named once, explained, with its fix.

One catalog, three uses:

1. ``npgpt check-book`` diagnoses: when a reader's class fails, the reference is re-run with each
   mistake of that class's component applied, and a match is named ("your LayerNorm matches the
   reference with the unbiased variance").
2. ``npgpt check --inject-bug NAME`` teaches: the reference with the mistake is checked against
   the clean reference, and the report shows where the mistake surfaces.
3. The project's own negative controls: tests/parity/test_bug_catalog.py asserts that every
   entry makes the check fail.

A mistake is applied by ``inject(name)``, a context manager that swaps one function of npgpt's
layers (or data / generation code) for a *forward-only mutant*: the mutant returns the wrong
output with the clean function's cache, so the clean backward still runs. The backward is then
inconsistent with the forward, which does not matter here: the forward rows fail first, and no
correct gradient can be derived from a wrong forward anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from npgpt import data as np_data
from npgpt import generation
from npgpt.layers import (
    cross_entropy,
    embedding,
    feed_forward,
    gelu,
    layer_norm,
    multi_head_attention,
    transformer_block,
)
from npgpt.layers.softmax import softmax

# the module (npgpt/__init__ exports the function generate, which shadows it as an attribute)


@dataclasses.dataclass(frozen=True)
class Bug:
    name: str  # the catalog key, as typed on the command line
    component: str  # the book class it lives in: where check-book looks for it
    what: str  # the mistake, as the diagnosis says it ("your X matches the reference with ...")
    fix: str
    patch: Callable[[], Iterator[None]]  # applies the mutant while the context is open
    symptom: str = ""  # where torch turns the mistake into an error: a piece of its message


def _swap(module: Any, name: str, make: Callable[[Callable], Callable]) -> Callable[[], Iterator[None]]:
    """A patch that replaces ``module.name`` by ``make(original)`` while the context is open."""

    @contextlib.contextmanager
    def patch() -> Iterator[None]:
        original = getattr(module, name)
        setattr(module, name, make(original))
        try:
            yield
        finally:
            setattr(module, name, original)

    return patch


# -- LayerNorm -------------------------------------------------------------------------------


def _layer_norm(norm: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> Callable[[Callable], Callable]:
    def make(real: Callable) -> Callable:
        def forward(x, scale, shift, eps=1e-5):
            _, cache = real(x, scale, shift, eps)
            return norm(x - x.mean(axis=-1, keepdims=True), x, eps) * scale + shift, cache

        return forward

    return make


def _unbiased(xc: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    return xc / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + eps)


def _eps_outside(xc: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    return xc / (np.sqrt(x.var(axis=-1, keepdims=True)) + eps)


# -- GELU --------------------------------------------------------------------------------------


def _gelu(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[Callable], Callable]:
    def make(real: Callable) -> Callable:
        def forward(x):
            return f(x), real(x)[1]

        return forward

    return make


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = 0.5 (1 + erf(x / sqrt 2)), elementwise, in x's dtype (erf in float64)."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * (1.0 + erf(np.asarray(x, dtype=np.float64) / math.sqrt(2.0)))).astype(x.dtype)


class _ErfCache(NamedTuple):
    x: np.ndarray
    cdf: np.ndarray  # Phi(x)


@contextlib.contextmanager
def _exact_gelu() -> Iterator[None]:
    """The exact GELU, x Phi(x), with its derivative Phi(x) + x phi(x): unlike the other entries
    this one is a whole function, backward included, because ``npgpt check --gelu erf`` runs the
    reference on it (a model built with nn.GELU(), nanoGPT's, is then checked everywhere else)."""
    real_forward, real_backward = gelu.forward, gelu.backward

    def forward(x):
        cdf = _normal_cdf(x)
        return x * cdf, _ErfCache(x, cdf)

    def backward(dout, cache):
        if not isinstance(cache, _ErfCache):
            return real_backward(dout, cache)
        x, cdf = cache
        pdf = np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))  # phi(x)
        return dout * (cdf + x * pdf)

    gelu.forward, gelu.backward = forward, backward
    try:
        yield
    finally:
        gelu.forward, gelu.backward = real_forward, real_backward


def _gelu_constant(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.0447 * x**3)))


# -- attention -------------------------------------------------------------------------------


def _attention(bug: str) -> Callable[[Callable], Callable]:
    """The book's MultiHeadAttention written plainly, with one mistake switched on."""

    def make(real: Callable) -> Callable:
        def forward(x, params, prefix, n_heads, drop_rate=0.0, *, train=False, rng=None, mask=None, kv=None):
            _, cache = real(x, params, prefix, n_heads, drop_rate, train=train, rng=rng, mask=mask, kv=kv)
            q, k, v = cache.queries, cache.keys, cache.values  # (B, H, T, D), (B, H, S, D)
            B, H, T, D = q.shape
            S = k.shape[2]
            if bug == "heads-reshape":  # (B, T, C) -> (B, H, T, D) by reshape alone: heads mix tokens
                split = lambda name: cache_input(cache, name).reshape(B, H, -1, D)  # noqa: E731
                q, k, v = split("q"), split("k"), split("v")
            scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
            keep, drop_scale = cache.drop_cache
            if bug == "dropout-before-mask" and keep is not None:
                scores = scores * keep * drop_scale
            future = multi_head_attention.causal_mask(T, S)
            if bug == "no-causal-mask":
                future = np.zeros_like(future)
            elif bug == "mask-diagonal":
                future = np.triu(np.ones((T, S), dtype=bool), k=S - T)
            elif bug == "mask-one-future":
                future = np.triu(np.ones((T, S), dtype=bool), k=S - T + 2)
            scores = np.where(future, -np.inf, scores)
            if bug != "no-attention-scaling":
                scores = scores / math.sqrt(H * D if bug == "scale-by-emb-dim" else D)
            with np.errstate(invalid="ignore"):  # a fully masked row (the diagonal masked at t = 0) is NaN, as in torch
                weights = softmax(scores, axis=2 if bug == "softmax-wrong-axis" else -1)
            if keep is not None and bug != "dropout-before-mask":
                weights = weights * keep * drop_scale
            context = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
            W, b = params[f"{prefix}out_proj.weight"], params.get(f"{prefix}out_proj.bias")
            out = context @ W.T + (0.0 if b is None else b)
            return out.astype(x.dtype), cache

        return forward

    return make


def cache_input(cache: Any, name: str) -> np.ndarray:
    """The (B, T, C) projection ``name`` ("q", "k", "v") before the heads were split."""
    heads = {"q": cache.queries, "k": cache.keys, "v": cache.values}[name]
    B, H, T, D = heads.shape
    return heads.transpose(0, 2, 1, 3).reshape(B, T, H * D)


# -- the block and the model -------------------------------------------------------------------


def _block(bug: str) -> Callable[[Callable], Callable]:
    """TransformerBlock.forward with post-norm (norm after the residual add) or no residual (the
    shortcut dropouts are left out: the eval-mode rows, without dropout, fail first)."""

    def make(real: Callable) -> Callable:
        def forward(x, params, prefix, n_heads, drop_rate=0.0, **kwargs):
            _, cache = real(x, params, prefix, n_heads, drop_rate, **kwargs)
            p = params
            norm1 = lambda h: layer_norm.forward(h, p[f"{prefix}norm1.scale"], p[f"{prefix}norm1.shift"])[0]  # noqa: E731
            norm2 = lambda h: layer_norm.forward(h, p[f"{prefix}norm2.scale"], p[f"{prefix}norm2.shift"])[0]  # noqa: E731
            att = lambda h: _att(h, p, prefix, n_heads, cache.att_cache.drop_cache)  # noqa: E731
            ff = lambda h: feed_forward.forward(h, p, f"{prefix}ff.")[0]  # noqa: E731
            if bug == "post-norm":
                x = norm1(x + att(x))
                out = norm2(x + ff(x))
            else:  # missing-residual
                out = ff(norm2(att(norm1(x))))
            return out, cache

        return forward

    return make


def _att(h: np.ndarray, p: dict, prefix: str, n_heads: int, drop: Any) -> np.ndarray:
    """The block's attention with the attention-weight dropout mask the clean run used."""
    rate = 0.0 if drop.mask is None else 1.0 - 1.0 / drop.scale
    return multi_head_attention.forward(
        h, p, f"{prefix}att.", n_heads, rate, train=drop.mask is not None, mask=drop.mask
    )[0]


@contextlib.contextmanager
def _no_final_norm() -> Iterator[None]:
    """The model's final LayerNorm left out: gpt_model's call of layer_norm becomes the identity."""
    from npgpt.layers import gpt_model

    class Identity:
        @staticmethod
        def forward(x, scale, shift, eps=1e-5):
            return x, layer_norm.forward(x, scale, shift, eps)[1]

        backward = staticmethod(layer_norm.backward)

    original = gpt_model.layer_norm
    gpt_model.layer_norm = Identity
    try:
        yield
    finally:
        gpt_model.layer_norm = original


def _no_positions(real: Callable) -> Callable:
    def forward(ids, tok_emb, pos_emb, pos_offset=0):
        return tok_emb[ids], real(ids, tok_emb, pos_emb, pos_offset)[1]

    return forward


def _positions_from_zero(real: Callable) -> Callable:
    return lambda ids, tok_emb, pos_emb, pos_offset=0: real(ids, tok_emb, pos_emb, 0)


# -- loss, data and sampling -------------------------------------------------------------------


def _unflattened(real: Callable) -> Callable:
    def forward(logits, targets, out=None):
        raise ValueError(
            f"Expected target size {(logits.shape[0], logits.shape[-1])}, got {targets.shape}: cross_entropy was given "
            "(B, T, V) logits and (B, T) targets without flattening"
        )

    return forward


def _unshifted(real: type) -> type:
    class Unshifted(real):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.target_ids = self.input_ids

    return Unshifted


def _filters(bug: str) -> Callable[[Callable], Callable]:
    def make(real: Callable) -> Callable:
        def filter_logits(logits, temperature=0.0, top_k=None, top_p=None):
            if bug == "top-k-plus-one" and top_k is not None:
                top_k = min(top_k + 1, logits.shape[-1])
            if bug == "temperature-multiplied" and temperature > 0.0:
                return real(logits * temperature**2, temperature, top_k, top_p)  # / t after * t^2: * t
            return real(logits, temperature, top_k, top_p)

        return filter_logits

    return make


CATALOG: dict[str, Bug] = {
    b.name: b
    for b in (
        Bug("unbiased-variance", "LayerNorm", "the unbiased variance (divided by C - 1)",
            "x.var(dim=-1, keepdim=True, unbiased=False): GPT-2 normalises by C",
            _swap(layer_norm, "forward", _layer_norm(_unbiased))),
        Bug("eps-outside-sqrt", "LayerNorm", "eps added outside the square root",
            "(x - mean) / torch.sqrt(var + self.eps)", _swap(layer_norm, "forward", _layer_norm(_eps_outside))),
        Bug("exact-gelu", "GELU", "the exact erf GELU", "GPT-2 uses the tanh approximation: "
            "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))", _exact_gelu),
        Bug("gelu-constant", "GELU", "0.0447 for the constant 0.044715 in the tanh GELU",
            "use 0.044715 exactly", _swap(gelu, "forward", _gelu(_gelu_constant))),
        Bug("no-attention-scaling", "MultiHeadAttention", "the attention scores not divided by sqrt(head_dim)",
            "attn_scores / keys.shape[-1] ** 0.5 before the softmax",
            _swap(multi_head_attention, "forward", _attention("no-attention-scaling"))),
        Bug("scale-by-emb-dim", "MultiHeadAttention", "the scores divided by sqrt(emb_dim) instead of sqrt(head_dim)",
            "divide by keys.shape[-1] ** 0.5 after the heads are split (head_dim = d_out // num_heads)",
            _swap(multi_head_attention, "forward", _attention("scale-by-emb-dim"))),
        Bug("no-causal-mask", "MultiHeadAttention", "no causal mask (every token sees the future)",
            "attn_scores.masked_fill_(self.mask.bool()[:T, :T], -torch.inf) before the softmax",
            _swap(multi_head_attention, "forward", _attention("no-causal-mask"))),
        Bug("mask-diagonal", "MultiHeadAttention", "the diagonal masked too (a token cannot see itself)",
            "torch.triu(torch.ones(T, T), diagonal=1): the mask starts one above the diagonal",
            _swap(multi_head_attention, "forward", _attention("mask-diagonal"))),
        Bug("mask-one-future", "MultiHeadAttention", "a mask shifted by one (each token sees the next one)",
            "torch.triu(torch.ones(T, T), diagonal=1), not diagonal=2",
            _swap(multi_head_attention, "forward", _attention("mask-one-future"))),
        Bug("softmax-wrong-axis", "MultiHeadAttention", "the softmax over the queries (dim=-2) instead of the keys",
            "torch.softmax(attn_scores / ..., dim=-1)",
            _swap(multi_head_attention, "forward", _attention("softmax-wrong-axis"))),
        Bug("dropout-before-mask", "MultiHeadAttention", "dropout applied to the scores before masking and softmax",
            "self.dropout(attn_weights) after the softmax",
            _swap(multi_head_attention, "forward", _attention("dropout-before-mask"))),
        Bug("heads-reshape", "MultiHeadAttention", "heads split with a reshape alone (no transpose), mixing tokens",
            "keys.view(b, T, num_heads, head_dim).transpose(1, 2)",
            _swap(multi_head_attention, "forward", _attention("heads-reshape"))),
        Bug("post-norm", "TransformerBlock", "post-norm (LayerNorm after the residual add)",
            "GPT-2 is pre-norm: x = x + drop(att(norm1(x))); x = x + drop(ff(norm2(x)))",
            _swap(transformer_block, "forward", _block("post-norm"))),
        Bug("missing-residual", "TransformerBlock", "no shortcut connections",
            "add the block's input back: x = x + shortcut after att and after ff",
            _swap(transformer_block, "forward", _block("missing-residual"))),
        Bug("missing-final-norm", "GPTModel", "no final LayerNorm before the output head",
            "logits = self.out_head(self.final_norm(x))", _no_final_norm),
        Bug("no-position-embedding", "GPTModel", "no positional embeddings added",
            "x = tok_embeds + pos_embeds with pos_embeds = self.pos_emb(torch.arange(T))",
            _swap(embedding, "forward", _no_positions)),
        Bug("kv-cache-positions", "GPTModel (KV cache)", "positions restarting at 0 for each token the KV cache adds",
            "with a cache the new token's position is the number of cached tokens",
            _swap(embedding, "forward", _positions_from_zero)),
        Bug("loss-not-flattened", "calc_loss_batch", "cross_entropy on (B, T, V) logits without flattening",
            "torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())",
            _swap(cross_entropy, "forward", _unflattened), symptom="Expected target size"),
        Bug("targets-not-shifted", "GPTDatasetV1", "targets equal to the inputs (not shifted by one)",
            "target_chunk = token_ids[i + 1 : i + max_length + 1]", _swap(np_data, "GPTDatasetV1", _unshifted)),
        Bug("top-k-plus-one", "generate", "top-k keeping k + 1 tokens",
            "keep logits >= the k-th largest: torch.topk(logits, top_k).values[:, -1]",
            _swap(generation, "filter_logits", _filters("top-k-plus-one"))),
        Bug("temperature-multiplied", "generate", "the logits multiplied by the temperature",
            "divide: logits / temperature", _swap(generation, "filter_logits", _filters("temperature-multiplied"))),
    )
}  # fmt: skip


def inject(name: str) -> contextlib.AbstractContextManager[None]:
    """Apply catalog entry ``name`` to npgpt's reference while the context is open."""
    return CATALOG[name].patch()


def of_component(component: str) -> list[Bug]:
    return [b for b in CATALOG.values() if b.component == component]
