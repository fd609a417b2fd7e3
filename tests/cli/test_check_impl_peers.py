"""`npgpt check --impl` on the GPT-2 code people use, as published (../shared/peers), with no adapter
code: the book's gpt.py and KV-cache models, minGPT, nanoGPT. The tiny config, both dtypes, 3 steps.
Skips cleanly without ../shared/peers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from parity.cli import main

PEERS = Path(__file__).resolve().parents[3] / "shared" / "peers"
BOOK = PEERS / "rasbt__LLMs-from-scratch" / "ch04"
NANOGPT = PEERS / "karpathy__nanoGPT" / "model.py"
MINGPT = PEERS / "karpathy__minGPT" / "mingpt" / "model.py"
FAST = ["--config", "tiny", "--dtype", "both", "--steps", "3", "--quiet"]
pytestmark = pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/peers is not beside the repository")


def check(capsys, *args) -> tuple[int, str]:
    code = main(["check", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    "spec",
    [
        "01_main-chapter-code/gpt.py:GPTModel",
        "03_kv-cache/gpt_with_kv_cache.py:GPTModel",
        "03_kv-cache/gpt_with_kv_cache_optimized.py:GPTModel",
    ],
)
def test_the_books_models_pass_with_the_float32_gelu_constant_said(capsys, spec):
    code, text = check(capsys, *FAST, "--impl", BOOK / spec)
    assert code == 0 and "float64: PASS" in text and "float32: PASS" in text, text
    assert "within check-book's 1e-07 but not the strict 1e-09" in text and "torch.tensor(2.0 / torch.pi)" in text
    assert 'if __name__ == "__main__": main())' in text  # loaded definitions-only, and said


def test_mingpt_passes_with_its_own_config_and_its_package_on_the_path(capsys):
    code, text = check(capsys, *FAST, "--impl", f"{MINGPT}:GPT")
    assert code == 0 and "float64: PASS" in text and "float32: PASS" in text, text
    assert "built with GPT.get_default_config() with n_layer=2, n_head=4, n_embd=64" in text


def test_nanogpt_fails_for_its_exact_gelu_and_passes_with_the_reference_on_it(capsys):
    code, text = check(capsys, *FAST, "--dtype", "float64", "--impl", f"{NANOGPT}:GPT")
    assert code == 1 and "first diverging tensor: trf_blocks.0.ff output" in text, text
    assert "matches the reference with the exact erf GELU (exact-gelu)" in text and "--gelu erf" in text
    code, text = check(capsys, *FAST, "--impl", f"{NANOGPT}:GPT", "--gelu", "erf")
    assert code == 0 and "float64: PASS" in text and "float32: PASS" in text, text
    assert "built with GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=64" in text
    assert "ties out_head to tok_emb" in text  # nanoGPT's lm_head is wte: detected, not assumed
    assert "dropout at att.dropout cannot take shared masks here" in text  # inside scaled_dot_product_attention


def test_a_mistake_planted_in_nanogpt_is_found_and_named(capsys, tmp_path):
    copy = tmp_path / "model.py"
    shutil.copy(NANOGPT, copy)
    source = copy.read_text()
    assert source.count("is_causal=True") == 1
    copy.write_text(source.replace("is_causal=True", "is_causal=False"))
    code, text = check(capsys, *FAST, "--dtype", "float64", "--impl", f"{copy}:GPT", "--gelu", "erf")
    assert code == 1 and "first diverging tensor: trf_blocks.0.att output" in text, text
    assert "(no-causal-mask)" in text, text


def test_a_missing_dependency_of_the_users_file_is_bad_input_naming_it(capsys, tmp_path):
    user = tmp_path / "needs.py"
    user.write_text(
        "import torch\nimport not_installed_anywhere as nia\n\n\nclass GPTModel(torch.nn.Module):\n"
        "    def __init__(self, cfg):\n        super().__init__()\n        self.layer = nia.Layer(cfg)\n"
    )
    code, text = check(capsys, "--config", "tiny", "--impl", f"{user}:GPTModel")
    assert code == 2 and "needs the module 'not_installed_anywhere'" in text and "bug in npgpt" not in text, text
