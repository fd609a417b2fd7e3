"""A golden bundle round trip through picoGPT (../shared/peers/jaymody__picoGPT/gpt2.py, a NumPy
GPT-2 whose head IS its token embedding), driven as a user would drive it: read the bundle's
inputs and weights, run picoGPT's own forward, write its logits, `npgpt golden verify`.
Skips cleanly without ../shared/peers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors")

from safetensors.numpy import load_file, save_file

from parity.cli import main
from parity.user_code import load_file as load_code

PICO = Path(__file__).resolve().parents[3] / "shared" / "peers" / "jaymody__picoGPT" / "gpt2.py"
pytestmark = pytest.mark.skipif(not PICO.is_file(), reason="../shared/peers is not beside the repository")


def pico_params(weights: dict[str, np.ndarray], n_layers: int) -> dict:
    """The bundle's book-named weights in picoGPT's nesting (OpenAI's names, Conv1D (in, out))."""
    w = {k.removeprefix("weight "): v for k, v in weights.items()}
    blocks = []
    for i in range(n_layers):
        b = f"trf_blocks.{i}."
        qkv = [f"{b}att.W_{n}" for n in ("query", "key", "value")]
        blocks.append(
            {
                "attn": {
                    "c_attn": {
                        "w": np.concatenate([w[f"{n}.weight"].T for n in qkv], axis=1),
                        "b": np.concatenate([w[f"{n}.bias"] for n in qkv]),
                    },
                    "c_proj": {"w": w[f"{b}att.out_proj.weight"].T, "b": w[f"{b}att.out_proj.bias"]},
                },
                "mlp": {
                    "c_fc": {"w": w[f"{b}ff.layers.0.weight"].T, "b": w[f"{b}ff.layers.0.bias"]},
                    "c_proj": {"w": w[f"{b}ff.layers.2.weight"].T, "b": w[f"{b}ff.layers.2.bias"]},
                },
                "ln_1": {"g": w[f"{b}norm1.scale"], "b": w[f"{b}norm1.shift"]},
                "ln_2": {"g": w[f"{b}norm2.scale"], "b": w[f"{b}norm2.shift"]},
            }
        )
    return {
        "wte": w["tok_emb.weight"],
        "wpe": w["pos_emb.weight"],
        "blocks": blocks,
        "ln_f": {"g": w["final_norm.scale"], "b": w["final_norm.shift"]},
    }


def run_pico(gpt2_file: Path, bundle: Path, out: Path) -> None:
    """picoGPT's forward on every row of the bundle's input ids; its logits written as `logits`."""
    gpt2 = vars(load_code(gpt2_file).module)["gpt2"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    cfg = manifest["config"]
    params = pico_params(load_file(str(bundle / "weights.safetensors")), cfg["n_layers"])
    ids = load_file(str(bundle / "inputs.safetensors"))["input ids"]
    logits = np.stack([gpt2(list(row), **params, n_head=cfg["n_heads"]) for row in ids])
    save_file({"logits": logits}, str(out))


def golden(capsys, *args) -> tuple[int, str]:
    code = main(["golden", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_picogpt_verifies_against_a_tied_bundle_and_not_an_untied_one(capsys, tmp_path):
    tied, untied = tmp_path / "tied", tmp_path / "untied"
    assert golden(capsys, "write", tied, "--tied", "--steps", "1")[0] == 0
    assert golden(capsys, "write", untied, "--steps", "1")[0] == 0
    weights = load_file(str(tied / "weights.safetensors"))
    assert "weight out_head.weight" not in weights and "weight out_head.weight" in load_file(
        str(untied / "weights.safetensors")
    )
    run_pico(PICO, tied, tmp_path / "pico.safetensors")
    code, text = golden(capsys, "verify", tied, tmp_path / "pico.safetensors")
    assert code == 0 and "PASS" in text, text
    # the untied bundle's logits come from a separate head picoGPT does not have: a FAIL, as it should be
    run_pico(PICO, untied, tmp_path / "pico-untied.safetensors")
    code, text = golden(capsys, "verify", untied, tmp_path / "pico-untied.safetensors")
    assert code == 1 and "FAIL" in text, text


def test_a_mistake_planted_in_picogpt_fails_the_tied_bundle(capsys, tmp_path):
    bundle = tmp_path / "tied"
    assert golden(capsys, "write", bundle, "--tied", "--steps", "1")[0] == 0
    copy = tmp_path / "gpt2.py"
    source = PICO.read_text()
    assert "np.var(x, axis=-1, keepdims=True)" in source
    copy.write_text(source.replace("np.var(x, axis=-1, keepdims=True)", "np.var(x, axis=-1, keepdims=True, ddof=1)"))
    run_pico(copy, bundle, tmp_path / "pico.safetensors")
    code, text = golden(capsys, "verify", bundle, tmp_path / "pico.safetensors")
    assert code == 1 and "FAIL" in text, text
