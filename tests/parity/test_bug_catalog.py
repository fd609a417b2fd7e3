"""The catalog of classic mistakes as the project's own negative controls: every entry, applied
to npgpt, must make the parity check against torchgpt fail, first at the row where that
mistake lives (a mistake the check cannot see would be a hole in the check)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from npgpt.config import GPTConfig
from parity.adapters import BuggedImpl, TorchImpl
from parity.bugs import CATALOG
from parity.cli import main
from parity.engine import draw_ids, random_params, run_check

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=8, n_heads=2, n_layers=2, drop_rate=0.1, qkv_bias=True)
FIRST_ROW = {  # where each mistake must surface first
    "LayerNorm": "trf_blocks.0.norm1 output",
    "GELU": "trf_blocks.0.ff output",
    "MultiHeadAttention": "trf_blocks.0.att output",
    "TransformerBlock": "trf_blocks.0 output",
}
SPECIAL = {
    "dropout-before-mask": "step 1 loss",  # only in train mode, where the attention dropout acts
    "missing-final-norm": "logits",
    "no-position-embedding": "trf_blocks.0.norm1 output",
    "kv-cache-positions": "generate step 2 logits (KV cache)",  # step 1 fills the cache from position 0
    "loss-not-flattened": "npgpt with loss-not-flattened raised ValueError while computing the eval loss",
    "targets-not-shifted": "data T=4 stride 1 batch 8: targets",
    "top-k-plus-one": "filter temperature 1.4, top-k 25, top-p None: kept tokens",
    "temperature-multiplied": "filter temperature 1.4, top-k 25, top-p None: probabilities",
}


def test_every_entry_has_an_expected_first_row():
    assert all(name in SPECIAL or bug.component in FIRST_ROW for name, bug in CATALOG.items())


@pytest.mark.parametrize("name", list(CATALOG))
def test_every_mistake_in_the_catalog_fails_the_check_where_it_lives(name):
    rng = np.random.default_rng(0)
    ids, targets = draw_ids(rng, CFG.vocab_size, (2, 8)), draw_ids(rng, CFG.vocab_size, (2, 8))
    report = run_check(
        CFG, random_params(CFG, 0), ids, targets, "float64", 2, impl=BuggedImpl(name), reference=TorchImpl()
    )
    expected = SPECIAL.get(name) or FIRST_ROW[CATALOG[name].component]
    assert not report.ok and report.first_failure.name.startswith(expected), report.first_failure


def test_the_clean_reference_passes_against_torchgpt_in_the_same_run():
    # the mutants are applied inside BuggedImpl's calls only: nothing leaks into the reference
    rng = np.random.default_rng(0)
    ids, targets = draw_ids(rng, CFG.vocab_size, (2, 8)), draw_ids(rng, CFG.vocab_size, (2, 8))
    from parity.adapters import NumpyImpl

    mutant = run_check(
        CFG, random_params(CFG, 0), ids, targets, "float64", 1, impl=BuggedImpl("no-causal-mask"), reference=NumpyImpl()
    )
    assert not mutant.ok  # the mutant ran, and failed ...
    report = run_check(CFG, random_params(CFG, 0), ids, targets, "float64", 1, impl=NumpyImpl(), reference=TorchImpl())
    assert report.ok, report.first_failure  # ... and left nothing behind in the clean one


def test_inject_bug_and_the_bugs_listing(capsys):
    assert main(["check", "--config", "tiny", "--steps", "1", "--quiet", "--inject-bug", "unbiased-variance"]) == 1
    out = capsys.readouterr().out
    assert "npgpt vs npgpt with unbiased-variance" in out
    assert "first diverging tensor: trf_blocks.0.norm1 output" in out and "the check caught it" in out
    assert main(["bugs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CATALOG) and lines[0].startswith("unbiased-variance")
    with pytest.raises(SystemExit) as stopped:  # argparse: the choices in one line, exit 2
        main(["check", "--inject-bug", "no-such-bug"])
    assert stopped.value.code == 2
    assert main(["check", "--impl", "hf", "--inject-bug", "exact-gelu"]) == 2
    assert "drop --impl hf" in capsys.readouterr().err
