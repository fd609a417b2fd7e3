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
