"""reuse_grad_buffers: the same gradients, bit for bit, written into the same arrays every call."""

from __future__ import annotations

import numpy as np

from npgpt.config import GPTConfig
from npgpt.model import GPTModel


def test_reused_gradient_buffers_hold_the_same_bits_and_are_the_same_arrays():
    cfg = GPTConfig.preset("tiny", qkv_bias=True)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, cfg.vocab_size, (2, 8)), rng.integers(0, cfg.vocab_size, (2, 8))) for _ in range(2)]
    fresh = GPTModel(cfg, seed=1, dtype=np.float64).eval()
    reused = GPTModel(cfg, seed=1, dtype=np.float64, reuse_grad_buffers=True).eval()
    first = first_fresh = None
    for ids, targets in batches:
        loss_a, a = fresh.loss_and_grads(ids, targets)
        loss_b, b = reused.loss_and_grads(ids, targets)
        assert loss_a == loss_b and a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        if first is None:
            first, first_fresh = b, a
        else:  # the second call wrote into the first call's arrays (weights and embeddings alike)
            assert all(
                b[k] is first[k] for k in ("tok_emb.weight", "trf_blocks.0.att.W_query.weight", "out_head.weight")
            )
    assert not any(a[k] is first_fresh[k] for k in a)  # a model without it gets fresh arrays every call


def test_cross_entropy_in_place_is_the_same_bits_in_one_array():
    """The loss and dlogits built in the logits' own array (``out=``, as loss_and_grads does) equal
    the separate arrays' bit for bit; the default leaves the logits and the cache as they were."""
    from npgpt.layers import cross_entropy

    rng = np.random.default_rng(4)
    logits, targets = rng.standard_normal((2, 5, 11)) * 3, rng.integers(0, 11, (2, 5))
    kept = logits.copy()
    loss, cache = cross_entropy.forward(logits, targets)
    probs = cache.probs.copy()
    dlogits = cross_entropy.backward(0.7, cache)
    np.testing.assert_array_equal(logits, kept)
    np.testing.assert_array_equal(cache.probs, probs)
    assert not np.array_equal(dlogits, probs)  # a backward that returned the probabilities would fail below
    own = logits.copy()
    loss_in_place, cache_in_place = cross_entropy.forward(own, targets, out=own)
    assert cache_in_place.probs is own and loss_in_place == loss
    np.testing.assert_array_equal(own, probs)
    dlogits_in_place = cross_entropy.backward(0.7, cache_in_place, out=cache_in_place.probs)
    assert dlogits_in_place is own
    np.testing.assert_array_equal(dlogits_in_place, dlogits)


def test_an_evaluation_loss_between_steps_leaves_the_gradients_alone():
    """``loss`` (npgpt train's evaluation) runs its forward in the workspace: the same loss as a
    model without one, and the gradients the last ``loss_and_grads`` returned keep their values."""
    cfg = GPTConfig.preset("tiny", qkv_bias=True)
    rng = np.random.default_rng(1)
    ids, other = rng.integers(0, cfg.vocab_size, (2, 8)), rng.integers(0, cfg.vocab_size, (2, 8))
    reused = GPTModel(cfg, seed=1, dtype=np.float64, reuse_grad_buffers=True).eval()
    fresh = GPTModel(cfg, seed=1, dtype=np.float64).eval()
    _, grads = reused.loss_and_grads(ids, ids)
    kept = {k: g.copy() for k, g in grads.items()}
    assert reused.loss(other, other) == fresh.loss(other, other)
    for k in grads:
        np.testing.assert_array_equal(grads[k], kept[k], err_msg=k)
    _, again = reused.loss_and_grads(other, other)  # the negative control: a gradient call does overwrite them
    assert again["out_head.weight"] is grads["out_head.weight"] and not np.array_equal(
        grads["out_head.weight"], kept["out_head.weight"]
    )
