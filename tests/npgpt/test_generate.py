"""Generation: greedy, temperature, top-k (book rule), top-p, eos stop, KV cache."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import GPTModel, NpgptError, generate, generate_text_simple
from npgpt.generation import filter_logits
from tests.helpers import randomized_params


@pytest.fixture
def model(small_cfg):
    return GPTModel(small_cfg, params=randomized_params(small_cfg, 0, dtype=np.float32, spread=1.0))


def test_greedy_equals_manual_argmax_loop(model):
    idx = np.array([[1, 2, 3]])
    out = generate_text_simple(model, idx, 5, model.cfg.context_length)
    manual = idx
    for _ in range(5):
        nxt = model.eval()(manual)[:, -1].argmax(-1)[:, None]
        manual = np.concatenate([manual, nxt], axis=1)
    np.testing.assert_array_equal(out, manual)
    assert model.training is False  # manual loop set eval; generate restores what it found


@pytest.mark.parametrize("n_new", [5, 20])  # 20 runs past the 12-token context: the window slides
def test_kv_cache_generation_equals_uncached(model, n_new):
    idx = np.array([[4, 5, 6], [7, 8, 9]])
    cached = generate(model, idx, n_new, model.cfg.context_length, use_cache=True)
    uncached = generate(model, idx, n_new, model.cfg.context_length, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    assert cached.shape == (2, 3 + n_new)
    seeded = [
        generate(model, idx, n_new, 12, temperature=1.3, top_k=20, rng=np.random.default_rng(7), use_cache=c)
        for c in (True, False)
    ]
    np.testing.assert_array_equal(*seeded)


def test_generate_restores_train_mode(model):
    model.train()
    generate(model, np.array([[1]]), 2, 12)
    assert model.training


def test_top_k_book_rule():
    logits = np.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = filter_logits(logits, top_k=3)
    np.testing.assert_array_equal(np.isfinite(out), [[False, True, True, True, False]])


def test_top_p_keeps_the_smallest_sufficient_set():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    out = filter_logits(np.log(probs), top_p=0.7)
    np.testing.assert_array_equal(np.isfinite(out), [[True, True, False, False]])  # 0.5 + 0.3 reaches 0.7
    out = filter_logits(np.log(probs), top_p=0.5)
    np.testing.assert_array_equal(np.isfinite(out), [[True, False, False, False]])


def test_sampling_follows_the_distribution(model):
    logits = model.eval()(np.zeros((1, 1), dtype=np.int64))[0, -1].astype(np.float64)
    top2 = np.argsort(logits)[-2:]
    p = np.exp(logits[top2] - logits[top2].max())
    p /= p.sum()
    n = 2000
    draws = generate(
        model, np.zeros((n, 1), dtype=np.int64), 1, 12, temperature=1.0, top_k=2, rng=np.random.default_rng(0)
    )
    values, counts = np.unique(draws[:, 1], return_counts=True)
    assert set(values) <= set(top2)  # top-k=2 leaves exactly the two largest logits
    freq = counts[values == top2[1]].sum() / n
    assert abs(freq - p[1]) < 4 * np.sqrt(p[1] * (1 - p[1]) / n)  # within 4 binomial sigmas


def test_eos_stops_and_is_not_appended(model):
    idx = np.array([[1, 2]])
    greedy = generate(model, idx, 6, 12)
    first_new = int(greedy[0, 2])
    stopped = generate(model, idx, 6, 12, eos_id=first_new)
    np.testing.assert_array_equal(stopped, idx)


def test_bad_generation_arguments(model):
    with pytest.raises(NpgptError, match="top_k"):
        generate(model, np.array([[1]]), 1, 12, top_k=0)
    with pytest.raises(NpgptError, match="top_p"):
        generate(model, np.array([[1]]), 1, 12, top_p=1.5)
    with pytest.raises(NpgptError, match="temperature"):
        generate(model, np.array([[1]]), 1, 12, temperature=-1)
