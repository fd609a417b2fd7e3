"""``npgpt check --impl``: other people's GPT-2s against the NumPy reference, as users run it.

The user files below are written the way a reader would write them: a class in the book's layout
(here built on torchgpt's modules), or a transformers GPT2LMHeadModel subclass; the buggy copies
change one sub-module, and the report must name that sub-module first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from parity.cli import main

TINY = ["--config", "tiny", "--steps", "2", "--quiet"]

BOOK_FILE = """
import torch
from torchgpt.model import GPTModel as BookGPT


class GPTModel(BookGPT):
    pass
"""
BOOK_FILE_WITH_EXACT_GELU = """
import torch
from torchgpt.model import GPTModel as BookGPT


class ExactGELU(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.gelu(x)  # erf GELU; the book uses the tanh approximation


class GPTModel(BookGPT):
    def __init__(self, cfg):
        super().__init__(cfg)
        for block in self.trf_blocks:
            block.ff.layers[1] = ExactGELU()
"""
HF_FILE = """
from transformers import GPT2LMHeadModel


class MyGPT(GPT2LMHeadModel):
    pass


class MyGPTWithExactGELU(GPT2LMHeadModel):
    def __init__(self, config):
        config.activation_function = "gelu"  # erf GELU instead of GPT-2's gelu_new
        super().__init__(config)
"""


def check(capsys, *args: str) -> tuple[int, str]:
    code = main(["check", *TINY, *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("impl", ["hf", "hf-sdpa"])
def test_transformers_gpt2_passes_in_both_dtypes_with_its_tied_head(capsys, tmp_path, impl):
    pytest.importorskip("transformers")
    report = tmp_path / "r.json"
    code, text = check(capsys, "--impl", impl, "--dtype", "both", "--json", str(report))
    assert code == 0, text
    assert "float64: PASS" in text and "float32: PASS" in text
    assert "ties out_head to tok_emb" in text and "att.dropout cannot take shared masks" in text
    saved = json.loads(report.read_text())
    assert saved["implementation"].startswith("transformers GPT2LMHeadModel") and saved["reference"] == "npgpt"
    names = [row["name"] for row in saved["reports"][0]["rows"]]
    assert "grad tok_emb.weight" in names and "grad out_head.weight" not in names  # one tied tensor
    assert "trf_blocks.1.att output" in names  # localization below the block
    # its own past_key_values cache and logits processors, and no data pipeline (said so)
    assert (
        "generate step 4 logits (KV cache)" in names
        and "filter temperature 0.7, top-k 5, top-p 0.95: kept tokens" in names
    )
    assert "no data-pipeline rows" in text


def test_the_hf_rows_run_transformers_own_logits_processors(capsys, monkeypatch):
    pytest.importorskip("transformers")
    from transformers.generation import logits_process

    class KeepsOneMore(logits_process.TopKLogitsWarper):
        def __init__(self, top_k, **kwargs):
            super().__init__(top_k + 1, **kwargs)

    monkeypatch.setattr(logits_process, "TopKLogitsWarper", KeepsOneMore)
    code, text = check(capsys, "--impl", "hf")
    assert code == 1 and "first diverging tensor: filter temperature 1.4, top-k 25, top-p None: kept tokens" in text, (
        text
    )


def test_a_book_layout_file_passes_and_its_buggy_copy_names_the_sub_module(capsys, tmp_path):
    good, bad = tmp_path / "mine.py", tmp_path / "mine_bug.py"
    good.write_text(BOOK_FILE)
    bad.write_text(BOOK_FILE_WITH_EXACT_GELU)
    code, text = check(capsys, "--impl", f"{good}:GPTModel")
    assert code == 0 and "float64: PASS" in text, text
    code, text = check(capsys, "--impl", f"{bad}:GPTModel")
    assert code == 1 and "first diverging tensor: trf_blocks.0.ff output" in text, text


def test_a_hugging_face_layout_file_passes_and_its_buggy_copy_names_the_sub_module(capsys, tmp_path):
    pytest.importorskip("transformers")
    path = tmp_path / "hf_mine.py"
    path.write_text(HF_FILE)
    code, text = check(capsys, "--impl", f"{path}:MyGPT")
    assert code == 0 and "float64: PASS" in text, text
    code, text = check(capsys, "--impl", f"{path}:MyGPTWithExactGELU")
    assert code == 1 and "first diverging tensor: trf_blocks.0.ff output" in text, text


def test_a_crash_in_the_implementation_is_a_row_and_exit_3(capsys, tmp_path):
    path = tmp_path / "crashes.py"
    path.write_text(
        BOOK_FILE + "\n\nclass Fragile(GPTModel):\n    def forward(self, ids):\n        if self.training:\n"
        "            raise RuntimeError('no dropout here')\n        return super().forward(ids)\n"
    )
    code, text = check(capsys, "--impl", f"{path}:Fragile")
    assert code == 3 and "Traceback" not in text, text
    assert "raised RuntimeError while computing step 1's loss and gradients" in text and "no dropout here" in text
    assert "float64: FAIL, 1 outside tolerance" in text  # every row before the crash was compared, and passed


def test_an_adapter_class_is_run_through_the_protocol(capsys, tmp_path):
    path = tmp_path / "adapters_mine.py"
    path.write_text("from parity.adapters import NumpyImpl\n\n\nclass Mine(NumpyImpl):\n    name = 'mine'\n")
    code, text = check(capsys, "--impl", f"{path}:Mine")
    assert code == 0 and "npgpt vs mine" in text and "float64: PASS" in text, text


@pytest.mark.parametrize(
    "source, spec, message",
    [
        (None, "nothing.py:GPTModel", "does not exist"),
        (None, "torchgpt-typo", "not one of torchgpt, hf, hf-sdpa"),
        ("X = 1\n", "{path}:GPTModel", "has no 'GPTModel'"),
        (
            "import torch\nclass GPTModel(torch.nn.Module):\n    def __init__(self, cfg):\n        super().__init__()\n"
            "        self.w = torch.nn.Linear(2, 2)\n",
            "{path}:GPTModel",
            "not a layout npgpt knows",
        ),
        (BOOK_FILE + "\n\nclass Extra(GPTModel):\n    def __init__(self, cfg):\n        super().__init__(cfg)\n"
         "        self.extra = torch.nn.Linear(2, 2)\n", "{path}:Extra", "does not know: extra.bias, extra.weight"),
    ],
)  # fmt: skip
def test_what_cannot_be_matched_is_one_line_and_exit_2(capsys, tmp_path, source, spec, message):
    path = tmp_path / "user_model.py"
    if source is not None:
        path.write_text(source)
    code, text = check(capsys, "--impl", spec.format(path=path))
    err = [line for line in text.splitlines() if line.startswith("npgpt check: error:")]
    assert code == 2 and len(err) == 1 and message in err[0], text


JAX_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jax_gpt2" / "gpt2_jax.py"


def test_the_jax_example_passes_through_the_cli_and_a_buggy_copy_fails(capsys, tmp_path):
    """A non-torch implementation (jax.value_and_grad), run as a user runs it."""
    pytest.importorskip("jax")
    code, text = check(capsys, "--impl", f"{JAX_EXAMPLE}:JaxGPT2", "--dtype", "both")
    assert code == 0 and "float64: PASS" in text and "float32: PASS" in text, text
    biased = "var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)"
    source = JAX_EXAMPLE.read_text()
    assert biased in source
    buggy = tmp_path / "gpt2_jax_unbiased.py"
    buggy.write_text(source.replace(biased, "var = ((x - mean) ** 2).sum(axis=-1, keepdims=True) / (x.shape[-1] - 1)"))
    code, text = check(capsys, "--impl", f"{buggy}:JaxGPT2")
    assert code == 1 and "first diverging tensor: trf_blocks.0.norm1 output" in text, text
