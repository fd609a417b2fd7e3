"""Properties any correct GPT forward has: causality, batch independence, KV-cache equality,
dtype preservation, and an untrained loss of about ln(V)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgpt import GPTConfig, GPTModel, KVCache
from npgpt.layers import cross_entropy, dropout, embedding, feed_forward, gelu, layer_norm, linear
from npgpt.layers import multi_head_attention as mha
from tests.helpers import randomized_params


@pytest.fixture
def model(small_cfg):
    return GPTModel(small_cfg, params=randomized_params(small_cfg, 0)).eval()


def test_causality(model):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.cfg.vocab_size, (1, 10))
    base = model(ids)
    for t in (0, 4, 9):
        changed = ids.copy()
        changed[0, t] = (changed[0, t] + 1) % model.cfg.vocab_size
        out = model(changed)
        np.testing.assert_array_equal(out[:, :t], base[:, :t])  # the past does not see the future
        assert not np.allclose(out[:, t], base[:, t])  # and the position itself does change


def test_batch_independence(model):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, model.cfg.vocab_size, (3, 8))
    together = model(ids)
    for b in range(3):
        np.testing.assert_allclose(model(ids[b : b + 1])[0], together[b], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kv_cache_equals_uncached(small_cfg, dtype):
    model = GPTModel(small_cfg, params=randomized_params(small_cfg, 2, dtype=dtype)).eval()
    rng = np.random.default_rng(2)
    ids = rng.integers(0, small_cfg.vocab_size, (2, 9))
    full = model(ids)
    kv = KVCache(small_cfg, 2, model.dtype)
    pieces = [model(ids[:, :4], kv_cache=kv)] + [model(ids[:, t : t + 1], kv_cache=kv) for t in range(4, 9)]
    cached = np.concatenate(pieces, axis=1)
    assert cached.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cached, full, rtol=tol, atol=tol)
    assert kv.length == 9


def test_kv_cache_rejects_overflow(small_cfg):
    from npgpt import NpgptError

    model = GPTModel(small_cfg, params=randomized_params(small_cfg, 2)).eval()
    kv = KVCache(small_cfg, 1, model.dtype)
    model(np.zeros((1, small_cfg.context_length), dtype=np.int64), kv_cache=kv)
    with pytest.raises(NpgptError, match="exceeds context_length"):
        model(np.zeros((1, 1), dtype=np.int64), kv_cache=kv)


def test_float32_in_float32_out_everywhere(small_cfg):
    """NumPy 2 promotes float32 with np.float64 scalars to float64; nothing may do that here."""
    rng = np.random.default_rng(3)
    f32 = np.float32
    params = randomized_params(small_cfg, 3, dtype=f32)
    x = rng.standard_normal((2, 5, small_cfg.emb_dim)).astype(f32)
    p = "trf_blocks.0."
    out, c = linear.forward(x, params[p + "att.out_proj.weight"], params[p + "att.out_proj.bias"])
    assert out.dtype == f32 and all(g.dtype == f32 for g in linear.backward(out, c))
    out, c = layer_norm.forward(x, params[p + "norm1.scale"], params[p + "norm1.shift"])
    assert out.dtype == f32 and all(g.dtype == f32 for g in layer_norm.backward(out, c))
    out, c = gelu.forward(x)
    assert out.dtype == f32 and gelu.backward(out, c).dtype == f32
    out, c = dropout.forward(x, 0.1, train=True, rng=np.random.default_rng(0))
    assert out.dtype == f32 and dropout.backward(out, c).dtype == f32
    out, c = mha.forward(x, params, p + "att.", small_cfg.n_heads, 0.1, train=True, rng=np.random.default_rng(0))
    dx, grads = mha.backward(out, c)
    assert out.dtype == f32 and dx.dtype == f32 and all(g.dtype == f32 for g in grads.values())
    out, c = feed_forward.forward(x, params, p + "ff.")
    dx, grads = feed_forward.backward(out, c)
    assert out.dtype == f32 and dx.dtype == f32 and all(g.dtype == f32 for g in grads.values())
    ids = rng.integers(0, small_cfg.vocab_size, (2, 5))
    out, c = embedding.forward(ids, params["tok_emb.weight"], params["pos_emb.weight"])
    assert out.dtype == f32 and all(g.dtype == f32 for g in embedding.backward(out, c))
    logits = rng.standard_normal((2, 5, small_cfg.vocab_size)).astype(f32)
    loss, c = cross_entropy.forward(logits, ids)
    assert loss.dtype == f32 and cross_entropy.backward(1.0, c).dtype == f32

    model = GPTModel(small_cfg.replace(drop_rate=0.1), params=params)
    loss, grads = model.loss_and_grads(ids, ids)
    assert model(ids).dtype == f32
    assert {g.dtype for g in grads.values()} == {np.dtype(f32)}
    assert grads.keys() == params.keys()
    assert all(grads[k].shape == params[k].shape for k in params)


def test_untrained_loss_is_about_ln_vocab():
    cfg = GPTConfig(vocab_size=1000, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    model = GPTModel(cfg, seed=0).eval()
    rng = np.random.default_rng(0)
    ids, targets = rng.integers(0, 1000, (4, 16)), rng.integers(0, 1000, (4, 16))
    # torch-default init: logit std ~ 0.58, so the loss sits a little above ln(V)
    assert abs(model.loss(ids, targets) - math.log(1000)) < 0.5
    model.params["out_head.weight"] *= 1e-4  # small init: uniform predictions
    assert model.loss(ids, targets) == pytest.approx(math.log(1000), abs=1e-3)


def test_eval_is_deterministic_and_train_uses_dropout(small_cfg):
    cfg = small_cfg.replace(drop_rate=0.5)
    model = GPTModel(cfg, params=randomized_params(cfg, 4), seed=1)
    ids = np.arange(6)[None]
    model.eval()
    np.testing.assert_array_equal(model(ids), model(ids))
    assert model.last_masks == {}
    model.train()
    a, masks = model(ids), model.last_masks
    assert not np.allclose(a, model(ids))  # fresh masks each call
    np.testing.assert_array_equal(model(ids, masks=masks), a)  # replaying the masks replays the output


@pytest.mark.parametrize("chunk", [1000, dropout.DRAW_CHUNK])
def test_a_mask_drawn_in_chunks_is_the_whole_draw(chunk, monkeypatch):
    """draw_mask fills the mask a chunk of uniforms at a time: the same stream, so the same masks (and
    every seeded run, resume and golden file) as ``rng.random(shape, float32) >= p`` in one call."""
    monkeypatch.setattr(dropout, "DRAW_CHUNK", chunk)
    for shape in [(3, 7, 101), (2, 150_001), (0, 5)]:
        whole = np.random.default_rng(11).random(shape, dtype=np.float32) >= 0.3
        rng = np.random.default_rng(11)
        mask = dropout.draw_mask(rng, shape, 0.3)
        assert mask.dtype == bool and mask.shape == shape
        np.testing.assert_array_equal(mask, whole)
        follow = np.random.default_rng(11)
        follow.random(shape, dtype=np.float32)
        assert rng.random() == follow.random()  # the generator is left where one whole draw leaves it


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_is_x_times_mask_times_scale_bit_for_bit_and_leaves_its_input(dtype):
    """dropout writes x * mask * 1/(1-p) into one new array (a multiply, then the scale in place):
    the same bits as the expression, in x's dtype, with x and dout left as they were."""
    rng = np.random.default_rng(4)
    x, dout = (rng.standard_normal((2, 3, 7, 7)).astype(dtype) for _ in range(2))
    x0, dout0 = x.copy(), dout.copy()
    out, cache = dropout.forward(x, 0.3, train=True, rng=np.random.default_rng(1))
    mask = np.asarray(cache.mask)
    assert 0 < mask.sum() < mask.size  # some kept, some dropped
    np.testing.assert_array_equal(out, x * mask * (1.0 / 0.7))
    np.testing.assert_array_equal(dropout.backward(dout, cache), dout * mask * (1.0 / 0.7))
    assert out.dtype == dtype and not np.array_equal(out, x * mask)  # the scale applied
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, dout0)


@pytest.mark.parametrize("drop_rate", [0.0, 0.1])
def test_attention_backward_works_in_its_own_arrays_and_leaves_the_cache_as_the_forward_left_it(small_cfg, drop_rate):
    """The softmax backward runs in place in dropout's output gradient (no (B, H, T, S) temporaries):
    the cached weights must stay the forward's, so a second backward gives the same bits."""
    params = randomized_params(small_cfg, 3)
    rng = np.random.default_rng(2)
    x, dout = (rng.standard_normal((2, 9, small_cfg.emb_dim)) for _ in range(2))
    p = "trf_blocks.0.att."
    _, cache = mha.forward(x, params, p, small_cfg.n_heads, drop_rate, train=True, rng=np.random.default_rng(0))
    kept = {name: np.array(a) for name, a in cache._asdict().items() if isinstance(a, np.ndarray)}
    first, second = mha.backward(dout, cache), mha.backward(dout, cache)
    for name, a in kept.items():
        np.testing.assert_array_equal(getattr(cache, name), a, err_msg=name)
    np.testing.assert_array_equal(first[0], second[0])
    assert all(np.array_equal(first[1][k], second[1][k]) for k in first[1])


def test_layer_norm_backward_works_in_its_own_arrays_and_leaves_the_cache_as_the_forward_left_it():
    """forward and backward compute in place in arrays they made (the centred input, dnorm): the
    cached input, mean and rstd stay the forward's, so a second backward gives the same bits."""
    rng = np.random.default_rng(6)
    x, dout = (rng.standard_normal((2, 5, 16)) for _ in range(2))
    scale, shift = rng.standard_normal(16), rng.standard_normal(16)
    x0 = x.copy()
    _, cache = layer_norm.forward(x, scale, shift)
    kept = [np.array(a) for a in cache]
    first, second = layer_norm.backward(dout, cache), layer_norm.backward(dout, cache)
    for a, b in zip(cache, kept, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, x0)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
