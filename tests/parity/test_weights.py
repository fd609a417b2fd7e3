"""Weight formats: real OpenAI-layout TF checkpoints written with TensorFlow, HF safetensors,
.npz and .pth — round trips, the exact external layout, and an independent oracle proving the
mapping's conventions (not just that it inverts itself)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from npgpt import GPTConfig, GPTModel, NpgptError
from parity.engine import random_params
from parity.mapping import to_gpt2
from parity.weights import load_weights, save_weights

CFG = GPTConfig(vocab_size=60, context_length=16, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.1, qkv_bias=True)


@pytest.fixture(scope="module")
def params():
    return {k: v.astype(np.float32) for k, v in random_params(CFG, 0).items()}


def gpt2_reference_logits(t: dict[str, np.ndarray], n_head: int, ids: np.ndarray) -> np.ndarray:
    """GPT-2's forward written directly on OpenAI's layout (Conv1D x @ w + b, fused c_attn split
    on the last axis, tied head), independent of parity.mapping: the oracle for the convention."""

    def ln(x, g, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return g * (x - m) / np.sqrt(v + 1e-5) + b

    def conv(x, name):
        w = t[name + "/w"]
        return x @ (w[0] if w.ndim == 3 else w) + t[name + "/b"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    T = ids.shape[-1]
    x = t["wte"][ids] + t["wpe"][:T]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(1 + max(int(k[1:].split("/")[0]) for k in t if k.startswith("h"))):
        h = f"h{i}/"
        q, k, v = np.split(conv(ln(x, t[h + "ln_1/g"], t[h + "ln_1/b"]), h + "attn/c_attn"), 3, axis=-1)
        heads = []
        for qh, kh, vh in zip(*(np.split(a, n_head, axis=-1) for a in (q, k, v)), strict=True):
            s = qh @ kh.swapaxes(-1, -2) / math.sqrt(qh.shape[-1]) + mask
            w = np.exp(s - s.max(-1, keepdims=True))
            heads.append((w / w.sum(-1, keepdims=True)) @ vh)
        x = x + conv(np.concatenate(heads, axis=-1), h + "attn/c_proj")
        x = x + conv(gelu(conv(ln(x, t[h + "ln_2/g"], t[h + "ln_2/b"]), h + "mlp/c_fc")), h + "mlp/c_proj")
    return ln(x, t["ln_f/g"], t["ln_f/b"]) @ t["wte"].T


def test_mapping_convention_against_an_independent_gpt2_forward(params):
    tied = {**params, "out_head.weight": params["tok_emb.weight"]}  # OpenAI ties the head
    external = {k: v.astype(np.float64) for k, v in to_gpt2(CFG, tied, conv_leading_one=True).items()}
    assert external["h0/attn/c_attn/w"].shape == (1, 12, 36)  # OpenAI's [1, in, out]
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    ours = GPTModel(CFG, params={k: v.astype(np.float64) for k, v in tied.items()}).eval()(ids)
    np.testing.assert_allclose(ours, gpt2_reference_logits(external, CFG.n_heads, ids), rtol=1e-10, atol=1e-10)


def test_openai_checkpoint_written_with_tensorflow(tmp_path, params):
    tf = pytest.importorskip("tensorflow")
    model_dir = save_weights(tmp_path / "124M-like", CFG, params)
    assert sorted(os.listdir(model_dir)) == [
        "checkpoint", "hparams.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index", "model.ckpt.meta",
    ]  # fmt: skip
    hp = json.loads((model_dir / "hparams.json").read_text())
    assert hp == {"n_vocab": 60, "n_ctx": 16, "n_embd": 12, "n_head": 3, "n_layer": 2}
    ckpt = tf.train.latest_checkpoint(str(model_dir))
    shapes = dict(tf.train.list_variables(ckpt))
    assert shapes["model/h0/attn/c_attn/w"] == [1, 12, 36]
    assert shapes["model/h1/mlp/c_proj/w"] == [1, 48, 12]
    assert shapes["model/wte"] == [60, 12] and shapes["model/ln_f/g"] == [12]
    # what the book's loader does: split c_attn on the last axis, transpose
    q_w = np.split(tf.train.load_variable(ckpt, "model/h0/attn/c_attn/w")[0], 3, axis=-1)[0]
    np.testing.assert_array_equal(q_w.T, params["trf_blocks.0.att.W_query.weight"])
    cfg, loaded = load_weights(model_dir)
    assert cfg == CFG
    for k, v in params.items():
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)


@pytest.mark.parametrize("name", ["w.safetensors", "w.npz", "w.pth"])
def test_round_trips(tmp_path, params, name):
    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    if name.endswith(".pth"):
        pytest.importorskip("torch")
    path = save_weights(tmp_path / name, CFG, params)
    cfg, loaded = load_weights(path)
    assert cfg == CFG
    assert all(np.array_equal(loaded[k], v) for k, v in params.items())
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left


def test_safetensors_uses_hf_gpt2_names_and_reads_hub_files(tmp_path, params):
    st = pytest.importorskip("safetensors.numpy")
    path = save_weights(tmp_path / "model.safetensors", CFG, params)
    names = set(st.load_file(str(path)))
    assert {"transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "transformer.ln_f.bias"} <= names
    assert st.load_file(str(path))["transformer.h.0.mlp.c_fc.weight"].shape == (12, 48)  # Conv1D (in, out)
    # a hub-style file: no prefix, mask buffers, tied head, config.json beside it
    hub = {k.removeprefix("transformer."): v for k, v in st.load_file(str(path)).items() if k != "lm_head.weight"}
    hub["h.0.attn.bias"] = np.ones((1, 1, 16, 16), dtype=np.float32)
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    st.save_file(hub, str(hub_dir / "model.safetensors"))
    (hub_dir / "config.json").write_text(json.dumps({"n_head": 3}))
    cfg, loaded = load_weights(hub_dir)
    assert cfg.n_heads == 3 and cfg.qkv_bias
    np.testing.assert_array_equal(loaded["out_head.weight"], params["tok_emb.weight"])  # tied on load


def test_model_without_qkv_bias_round_trips_through_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    cfg = CFG.replace(qkv_bias=False)
    p = {k: v.astype(np.float32) for k, v in random_params(cfg, 1).items()}
    loaded_cfg, loaded = load_weights(save_weights(tmp_path / "nb.safetensors", cfg, p))
    assert loaded_cfg == cfg and loaded.keys() == p.keys()


def test_bad_weights_paths(tmp_path):
    with pytest.raises(NpgptError, match="do not exist"):
        load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "x.bin").write_bytes(b"1234")
    with pytest.raises(NpgptError, match="cannot tell the format"):
        load_weights(tmp_path / "x.bin")
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    pytest.importorskip("safetensors")
    with pytest.raises(NpgptError, match="not a readable safetensors"):
        load_weights(tmp_path / "bad.safetensors")


def test_damaged_openai_checkpoint_is_a_clear_error(tmp_path, params):
    pytest.importorskip("tensorflow")
    model_dir = save_weights(tmp_path / "oa", CFG, params)
    data = model_dir / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(NpgptError, match="cannot read the TF checkpoint"):
        load_weights(model_dir)
