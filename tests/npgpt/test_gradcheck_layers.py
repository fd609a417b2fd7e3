"""Finite-difference checks (float64, centered) of every hand-written backward.

Every parameter is randomised and the upstream gradient is random, never ones: an all-ones
dout hides errors that cancel in a sum. Thresholds: CS231n relative error <= 1e-7 per
component, <= 1e-6 for the whole model (docs/conventions.md, "Gradient checks").
"""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import GPTModel, check_model, gradcheck
from npgpt.layers import (
    cross_entropy,
    dropout,
    embedding,
    feed_forward,
    gelu,
    layer_norm,
    linear,
    multi_head_attention,
    transformer_block,
)
from tests.helpers import randomized_params

COMPONENT_TOL = 1e-7
MODEL_TOL = 1e-6


def _check(forward, backward, inputs, out_shape, seed=0):
    """gradcheck of ``sum(forward(**inputs) * dout)`` against ``backward(dout)``."""
    rng = np.random.default_rng(seed + 1000)
    dout = rng.standard_normal(out_shape)
    grads = backward(dout)
    errors = gradcheck(lambda p: float(np.sum(forward(**p) * dout)), inputs, grads, n_coords=4, seed=seed)
    return max(errors.values()), errors


def assert_within(errors: dict[str, float]) -> None:
    """Every tensor's gradcheck error under COMPONENT_TOL; a failure names the tensors and errors."""
    bad = {name: f"{err:.1e}" for name, err in errors.items() if not err < COMPONENT_TOL}
    assert not bad, f"gradcheck error >= {COMPONENT_TOL:.0e} for {bad}"


def rand(rng, *shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    rng = np.random.default_rng(0)
    inputs = {"x": rand(rng, 2, 3, 5), "W": rand(rng, 4, 5)}
    if bias:
        inputs["b"] = rand(rng, 4)
    _, cache = linear.forward(**inputs)

    def backward(dout):
        dx, dW, db = linear.backward(dout, cache)
        return {"x": dx, "W": dW, **({"b": db} if bias else {})}

    _, errors = _check(lambda **p: linear.forward(**p)[0], backward, inputs, (2, 3, 4))
    assert_within(errors)


def test_layer_norm():
    rng = np.random.default_rng(1)
    inputs = {"x": 2.0 + 3.0 * rand(rng, 2, 4, 7), "scale": rand(rng, 7), "shift": rand(rng, 7)}
    _, cache = layer_norm.forward(**inputs)

    def backward(dout):
        return dict(zip(("x", "scale", "shift"), layer_norm.backward(dout, cache), strict=True))

    _, errors = _check(lambda **p: layer_norm.forward(**p)[0], backward, inputs, (2, 4, 7))
    assert_within(errors)


def test_gelu():
    rng = np.random.default_rng(2)
    inputs = {"x": 3.0 * rand(rng, 3, 11)}
    _, cache = gelu.forward(**inputs)
    _, errors = _check(lambda **p: gelu.forward(**p)[0], lambda d: {"x": gelu.backward(d, cache)}, inputs, (3, 11))
    assert_within(errors)


def test_dropout_with_fixed_mask():
    rng = np.random.default_rng(3)
    mask = rng.random((4, 6)) > 0.3
    inputs = {"x": rand(rng, 4, 6)}
    _, cache = dropout.forward(inputs["x"], 0.3, train=True, mask=mask)
    _, errors = _check(
        lambda **p: dropout.forward(p["x"], 0.3, train=True, mask=mask)[0],
        lambda d: {"x": dropout.backward(d, cache)},
        inputs,
        (4, 6),
    )
    assert_within(errors)


def test_embedding_with_repeated_ids():
    rng = np.random.default_rng(4)
    ids = np.array([[3, 1, 3, 3], [0, 1, 2, 3]])  # token 3 four times: the scatter must ADD
    inputs = {"tok_emb": rand(rng, 5, 6), "pos_emb": rand(rng, 7, 6)}
    _, cache = embedding.forward(ids, **inputs)

    def backward(dout):
        dtok, dpos = embedding.backward(dout, cache)
        return {"tok_emb": dtok, "pos_emb": dpos}

    _, errors = _check(lambda **p: embedding.forward(ids, **p)[0], backward, inputs, (2, 4, 6))
    assert_within(errors)


def test_cross_entropy():
    rng = np.random.default_rng(5)
    targets = np.array([[1, 4, 4], [0, 2, 9]])
    inputs = {"logits": 2.0 * rand(rng, 2, 3, 10)}
    _, cache = cross_entropy.forward(inputs["logits"], targets)
    errors = gradcheck(
        lambda p: float(cross_entropy.forward(p["logits"], targets)[0]),
        inputs,
        {"logits": cross_entropy.backward(1.0, cache)},
        n_coords=6,
    )
    assert_within(errors)


def _block_params(cfg, seed):
    return {k: v for k, v in randomized_params(cfg, seed).items() if k.startswith("trf_blocks.0.")}


@pytest.mark.parametrize("drop", [0.0, 0.25])  # 0.25: dropout on the weights with a fixed mask
@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_multi_head_attention(small_cfg, T, qkv_bias, drop):
    cfg = small_cfg.replace(qkv_bias=qkv_bias)
    rng = np.random.default_rng(6)
    prefix = "trf_blocks.0.att."
    params = {k: v for k, v in _block_params(cfg, 6).items() if k.startswith(prefix)}
    inputs = {"x": rand(rng, 2, T, cfg.emb_dim), **params}
    mask = rng.random((2, cfg.n_heads, T, T)) > drop if drop else None

    def fwd(**p):
        return multi_head_attention.forward(p["x"], p, prefix, cfg.n_heads, drop, train=drop > 0, mask=mask)[0]

    _, cache = multi_head_attention.forward(inputs["x"], inputs, prefix, cfg.n_heads, drop, train=drop > 0, mask=mask)

    def backward(dout):
        dx, grads = multi_head_attention.backward(dout, cache)
        return {"x": dx, **grads}

    err, errors = _check(fwd, backward, inputs, (2, T, cfg.emb_dim))
    assert err < COMPONENT_TOL, errors


def test_feed_forward(small_cfg):
    rng = np.random.default_rng(8)
    prefix = "trf_blocks.0.ff."
    params = {k: v for k, v in _block_params(small_cfg, 8).items() if k.startswith(prefix)}
    inputs = {"x": rand(rng, 2, 3, small_cfg.emb_dim), **params}
    _, cache = feed_forward.forward(inputs["x"], inputs, prefix)

    def backward(dout):
        dx, grads = feed_forward.backward(dout, cache)
        return {"x": dx, **grads}

    err, errors = _check(
        lambda **p: feed_forward.forward(p["x"], p, prefix)[0], backward, inputs, (2, 3, small_cfg.emb_dim)
    )
    assert err < COMPONENT_TOL, errors


@pytest.mark.parametrize("train", [False, True])
def test_transformer_block(small_cfg, train):
    cfg = small_cfg.replace(drop_rate=0.2 if train else 0.0)
    rng = np.random.default_rng(9)
    prefix = "trf_blocks.0."
    inputs = {"x": rand(rng, 2, 5, cfg.emb_dim), **_block_params(cfg, 9)}
    # draw the masks once, then replay them so the function is deterministic
    _, cache = transformer_block.forward(
        inputs["x"], inputs, prefix, cfg.n_heads, cfg.drop_rate, train=train, rng=np.random.default_rng(0)
    )
    masks = {}
    if train:
        masks = {
            prefix + transformer_block.ATT_DROP: cache.att_cache.drop_cache.mask,
            prefix + transformer_block.SHORTCUT_DROP_1: cache.drop1_cache.mask,
            prefix + transformer_block.SHORTCUT_DROP_2: cache.drop2_cache.mask,
        }

    def fwd(**p):
        return transformer_block.forward(p["x"], p, prefix, cfg.n_heads, cfg.drop_rate, train=train, masks=masks)[0]

    def backward(dout):
        dx, grads = transformer_block.backward(dout, cache)
        return {"x": dx, **grads}

    err, errors = _check(fwd, backward, inputs, (2, 5, cfg.emb_dim))
    assert err < COMPONENT_TOL, errors


@pytest.mark.parametrize("seed", [0, 1])
def test_whole_model_every_parameter(small_cfg, seed):
    model = GPTModel(small_cfg, params=randomized_params(small_cfg, seed)).eval()
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, small_cfg.vocab_size, (2, 7))
    ids[0, 4] = ids[0, 1] = ids[1, 6]  # repeated tokens
    targets = rng.integers(0, small_cfg.vocab_size, (2, 7))
    errors = check_model(model, ids, targets, n_coords=3, seed=seed)
    assert len(errors) == len(model.params) + 1  # every tensor checked, plus the joint directions
    assert max(errors.values()) < MODEL_TOL, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


def test_whole_model_with_dropout_masks(small_cfg):
    cfg = small_cfg.replace(drop_rate=0.3)
    model = GPTModel(cfg, params=randomized_params(cfg, 3), seed=5).train()
    rng = np.random.default_rng(3)
    ids = rng.integers(0, cfg.vocab_size, (2, 6))
    targets = rng.integers(0, cfg.vocab_size, (2, 6))
    _, grads = model.loss_and_grads(ids, targets)
    masks = model.last_masks
    assert len(masks) == 1 + 3 * cfg.n_layers

    def loss_at(params):
        return GPTModel(cfg, params=params).train().loss(ids, targets, masks=masks)

    errors = gradcheck(loss_at, model.params, grads, n_coords=2)
    assert max(errors.values()) < MODEL_TOL, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


def test_gradcheck_catches_a_wrong_scatter():
    """Negative control: ``dW[ids] += dout`` (no accumulation of repeated ids) must fail."""
    rng = np.random.default_rng(10)
    ids = np.array([[2, 2, 1]])
    inputs = {"tok_emb": rand(rng, 4, 3), "pos_emb": rand(rng, 3, 3)}
    _, cache = embedding.forward(ids, **inputs)
    dout = rng.standard_normal((1, 3, 3))

    dtok = np.zeros((4, 3))
    dtok[ids.reshape(-1)] += dout.reshape(-1, 3)  # the bug: the second "2" overwrites the first
    _, dpos = embedding.backward(dout, cache)
    errors = gradcheck(
        lambda p: float(np.sum(embedding.forward(ids, **p)[0] * dout)), inputs, {"tok_emb": dtok, "pos_emb": dpos}
    )
    assert errors["tok_emb"] > 1e-3


def test_gradcheck_catches_a_dropped_residual_gradient(small_cfg):
    """Negative control: overwriting the residual gradient instead of adding it must fail."""
    rng = np.random.default_rng(11)
    prefix = "trf_blocks.0."
    inputs = {"x": rand(rng, 1, 3, small_cfg.emb_dim), **_block_params(small_cfg, 11)}
    _, cache = transformer_block.forward(inputs["x"], inputs, prefix, small_cfg.n_heads)
    dout = rng.standard_normal((1, 3, small_cfg.emb_dim))
    dx, grads = transformer_block.backward(dout, cache)
    errors = gradcheck(
        lambda p: float(np.sum(transformer_block.forward(p["x"], p, prefix, small_cfg.n_heads)[0] * dout)),
        inputs,
        {**grads, "x": dx - dout},  # what an overwritten shortcut gradient would give
    )
    assert errors["x"] > 1e-3
