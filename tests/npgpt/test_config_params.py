"""The parameter vocabulary, configs, and one-line errors for bad input (docs/conventions.md)."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import GPT_CONFIG_124M, GPTConfig, GPTModel, NpgptError, num_params, param_shapes


def test_book_config_has_161_tensors_and_163m_numbers():
    cfg = GPTConfig.from_dict(GPT_CONFIG_124M)
    shapes = param_shapes(cfg)
    assert len(shapes) == 161
    assert num_params(cfg) == 163_009_536  # the number the book prints
    assert shapes["trf_blocks.0.att.W_query.weight"] == (768, 768)
    assert shapes["trf_blocks.11.ff.layers.0.weight"] == (3072, 768)
    assert shapes["trf_blocks.11.ff.layers.2.weight"] == (768, 3072)
    assert shapes["out_head.weight"] == (50257, 768)
    assert "trf_blocks.0.att.W_query.bias" not in shapes  # qkv_bias False
    assert cfg.to_dict() == GPT_CONFIG_124M


def test_presets():
    assert GPTConfig.preset("gpt2-small (124M)") == GPTConfig.from_dict(GPT_CONFIG_124M)
    medium = GPTConfig.preset("gpt2-medium (355M)")
    assert (medium.emb_dim, medium.n_layers, medium.n_heads) == (1024, 24, 16)
    assert GPTConfig.preset("gpt2-large (774M)").n_layers == 36
    assert GPTConfig.preset("gpt2-xl (1558M)").n_heads == 25
    assert GPTConfig.preset("124M", context_length=256).context_length == 256
    assert len(param_shapes(GPTConfig.preset("gpt2-small", qkv_bias=True))) == 161 + 36


def test_model_params_match_vocabulary():
    cfg = GPTConfig.preset("tiny")
    model = GPTModel(cfg, seed=0)
    assert {k: v.shape for k, v in model.params.items()} == param_shapes(cfg)
    assert all(v.dtype == np.float32 for v in model.params.values())
    assert np.all(model.params["trf_blocks.0.norm1.scale"] == 1.0)
    bound = 1 / np.sqrt(4 * cfg.emb_dim)
    assert np.abs(model.params["trf_blocks.0.ff.layers.2.weight"]).max() <= bound


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"emb_dim": 10, "n_heads": 3}, "not divisible by n_heads"),
        ({"n_layers": 0}, "positive integer"),
        ({"drop_rate": 1.0}, "drop_rate"),
    ],
)
def test_bad_config(change, message):
    with pytest.raises(NpgptError, match=message):
        GPTConfig.from_dict({**GPT_CONFIG_124M, **change})


def test_unknown_config_key():
    with pytest.raises(NpgptError, match="unknown config key"):
        GPTConfig.from_dict({**GPT_CONFIG_124M, "emb_size": 3})
    with pytest.raises(NpgptError, match="unknown preset"):
        GPTConfig.preset("gpt3")


def test_bad_ids(small_cfg):
    model = GPTModel(small_cfg)
    with pytest.raises(NpgptError, match=r"token id 61 is out of range \[0, 61\)"):
        model(np.array([[1, 61]]))
    with pytest.raises(NpgptError, match="token id -1"):
        model(np.array([[-1, 2]]))
    with pytest.raises(NpgptError, match="exceeds context_length=12"):
        model(np.zeros((1, 13), dtype=np.int64))
    with pytest.raises(NpgptError, match="must be integers"):
        model(np.zeros((1, 3)))
    with pytest.raises(NpgptError, match="shape"):
        model(np.zeros(3, dtype=np.int64))


def test_bad_params(small_cfg):
    good = GPTModel(small_cfg).params
    wrong_dtype = {**good, "out_head.weight": good["out_head.weight"].astype(np.float64)}
    with pytest.raises(NpgptError, match="all be float32 or all float64"):
        GPTModel(small_cfg, params=wrong_dtype)
    ints = {k: v.astype(np.int32) for k, v in good.items()}
    with pytest.raises(NpgptError, match="float32 or all float64"):
        GPTModel(small_cfg, params=ints)
    wrong_shape = {**good, "pos_emb.weight": np.zeros((5, small_cfg.emb_dim), np.float32)}
    with pytest.raises(NpgptError, match=r"pos_emb.weight \(5, 12\) != \(12, 12\)"):
        GPTModel(small_cfg, params=wrong_shape)
    missing = {k: v for k, v in good.items() if k != "final_norm.shift"}
    with pytest.raises(NpgptError, match=r"missing \[.final_norm\.shift.\]"):
        GPTModel(small_cfg, params=missing)


def test_error_messages_are_one_line(small_cfg):
    with pytest.raises(NpgptError) as info:
        GPTModel(small_cfg)(np.array([[99]]))
    assert "\n" not in str(info.value)
