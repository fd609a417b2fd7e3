"""The ONE mapping between external GPT-2 weight layouts and the project's vocabulary.

OpenAI's TF checkpoint and Hugging Face's GPT2LMHeadModel share a layout: a fused ``c_attn``
(q, k and v side by side), Conv1D weights stored (in, out) — OpenAI adds a leading 1 — and an
output head tied to ``wte``. Mapping in: split ``c_attn`` into W_query/W_key/W_value, transpose
every Conv1D weight to nn.Linear's (out, in), and give ``out_head.weight`` a copy of ``wte`` (the
book's way of tying on load). Mapping out is the inverse; a model without qkv biases gets zero
``c_attn`` biases, the layout having no way to say "none".
"""

from __future__ import annotations

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError

# GPT-2's four sizes: (emb_dim, n_layers) -> n_heads. A checkpoint without a config records
# neither the head count nor anything from which it could be derived; these are the published ones.
KNOWN_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}

# block-level (external name, our name, kind): kind "w" = Conv1D weight (transpose), "b"/"g" = vector
_BLOCK = [
    ("ln_1/g", "norm1.scale"),
    ("ln_1/b", "norm1.shift"),
    ("attn/c_proj/w", "att.out_proj.weight"),
    ("attn/c_proj/b", "att.out_proj.bias"),
    ("ln_2/g", "norm2.scale"),
    ("ln_2/b", "norm2.shift"),
    ("mlp/c_fc/w", "ff.layers.0.weight"),
    ("mlp/c_fc/b", "ff.layers.0.bias"),
    ("mlp/c_proj/w", "ff.layers.2.weight"),
    ("mlp/c_proj/b", "ff.layers.2.bias"),
]
_QKV = ("W_query", "W_key", "W_value")


def from_gpt2(
    tensors: dict[str, np.ndarray], n_heads: int | None = None, drop_rate: float = 0.1
) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """OpenAI-style names (``wte``, ``h0/attn/c_attn/w`` ...; no ``model/`` prefix) -> (cfg, params).

    Conv1D weights may be (in, out) or OpenAI's (1, in, out).
    """
    t = {k: np.asarray(v) for k, v in tensors.items()}
    for need in ("wte", "wpe", "ln_f/g", "ln_f/b"):
        if need not in t:
            raise NpgptError(f"GPT-2 weights lack {need!r}; is this a GPT-2 checkpoint?")
    n_layers = 1 + max((int(k[1:].split("/", 1)[0]) for k in t if k.startswith("h") and "/" in k), default=-1)
    V, C = t["wte"].shape
    if n_heads is None:
        if C not in KNOWN_HEADS:
            raise NpgptError(
                f"cannot tell n_heads for emb_dim={C}; keep the config.json/hparams.json beside the weights"
            )
        n_heads = KNOWN_HEADS[C]
    cfg = GPTConfig(V, t["wpe"].shape[0], C, n_heads, n_layers, drop_rate, qkv_bias=True)

    def conv(name: str) -> np.ndarray:
        w = t[name]
        return (w[0] if w.ndim == 3 else w).T.copy()  # (1, in, out) or (in, out) -> (out, in)

    params = {"tok_emb.weight": t["wte"], "pos_emb.weight": t["wpe"]}
    for i in range(n_layers):
        h, b = f"h{i}/", f"trf_blocks.{i}."
        q_w, k_w, v_w = np.split(conv(h + "attn/c_attn/w"), 3, axis=0)  # (3C, C) -> 3 x (C, C)
        q_b, k_b, v_b = np.split(t[h + "attn/c_attn/b"], 3, axis=-1)
        for name, w, bias in zip(_QKV, (q_w, k_w, v_w), (q_b, k_b, v_b), strict=True):
            params[f"{b}att.{name}.weight"] = w
            params[f"{b}att.{name}.bias"] = bias.copy()
        for ext, ours in _BLOCK:
            params[b + ours] = conv(h + ext) if ext.endswith("/w") else t[h + ext]
    params["final_norm.scale"] = t["ln_f/g"]
    params["final_norm.shift"] = t["ln_f/b"]
    params["out_head.weight"] = t["lm_head"] if "lm_head" in t else t["wte"].copy()
    return cfg, params


def to_gpt2(cfg: GPTConfig, params: dict[str, np.ndarray], conv_leading_one: bool) -> dict[str, np.ndarray]:
    """(cfg, params) -> OpenAI-style names; ``lm_head`` only when out_head differs from wte."""

    def conv(w: np.ndarray) -> np.ndarray:
        w = np.ascontiguousarray(w.T)  # (out, in) -> (in, out)
        return w[None] if conv_leading_one else w

    C = cfg.emb_dim
    out = {"wte": params["tok_emb.weight"], "wpe": params["pos_emb.weight"]}
    for i in range(cfg.n_layers):
        h, b = f"h{i}/", f"trf_blocks.{i}."
        w = np.concatenate([params[f"{b}att.{n}.weight"] for n in _QKV], axis=0)  # (3C, C)
        zeros = np.zeros(C, dtype=w.dtype)
        out[h + "attn/c_attn/w"] = conv(w)
        out[h + "attn/c_attn/b"] = np.concatenate([params.get(f"{b}att.{n}.bias", zeros) for n in _QKV])
        for ext, ours in _BLOCK:
            out[h + ext] = conv(params[b + ours]) if ext.endswith("/w") else params[b + ours]
    out["ln_f/g"] = params["final_norm.scale"]
    out["ln_f/b"] = params["final_norm.shift"]
    if not np.array_equal(params["out_head.weight"], params["tok_emb.weight"]):
        out["lm_head"] = params["out_head.weight"]
    return out


def hf_to_gpt2_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF GPT2(LMHead)Model names -> OpenAI-style: ``transformer.h.0.ln_1.weight`` -> ``h0/ln_1/g``.

    The ``attn.bias``/``attn.masked_bias`` mask buffers some files carry are dropped.
    """
    out = {}
    for name, value in tensors.items():
        n = name.removeprefix("transformer.")
        if n.endswith((".attn.bias", ".attn.masked_bias")) and np.asarray(value).ndim == 4:
            continue
        if n == "lm_head.weight":
            out["lm_head"] = value
            continue
        parts = n.split(".")
        if parts[0] == "h":
            parts = [f"h{parts[1]}", *parts[2:]]
        leaf = {"weight": "g", "bias": "b"} if parts[-2].startswith("ln_") else {"weight": "w", "bias": "b"}
        if parts[-1] in leaf and parts[0] not in ("wte", "wpe"):
            parts[-1] = leaf[parts[-1]]
        elif parts[0] in ("wte", "wpe"):
            parts = parts[:1]
        out["/".join(parts)] = value
    return out


def gpt2_to_hf_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenAI-style names -> HF GPT2LMHeadModel names (``transformer.`` prefix, ``lm_head.weight``)."""
    out = {}
    for name, value in tensors.items():
        if name in ("wte", "wpe"):
            out[f"transformer.{name}.weight"] = value
        elif name == "lm_head":
            out["lm_head.weight"] = value
        else:
            parts = name.split("/")
            if parts[0].startswith("h"):
                parts = ["h", parts[0][1:], *parts[1:]]
            parts[-1] = {"g": "weight", "w": "weight", "b": "bias"}[parts[-1]]
            out["transformer." + ".".join(parts)] = value
    return out
