"""check-book on the book author's own code, as published: every notebook and script of
rasbt/LLMs-from-scratch in ../shared/peers (chapters 2-5, appendix D) and every module of the
`llms-from-scratch` package. The author's code passes, offline, with nothing at module level run;
a copy with one catalog mistake planted fails in that class with that diagnosis.

Skips cleanly without ../shared/peers or the package.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from parity.cli import main

BOOK = Path(__file__).resolve().parents[3] / "shared" / "peers" / "rasbt__LLMs-from-scratch"
FAST = ["--examples", "5"]
CH3 = {"SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper", "MultiHeadAttention"}
CH3_EQUAL = {"SelfAttention_v1 == _v2", "MultiHeadAttentionWrapper == MultiHeadAttention"}
CH4 = {"LayerNorm", "GELU", "FeedForward", "TransformerBlock", "GPTModel", "generate_text_simple"}
DATA = {"GPTDatasetV1", "create_dataloader_v1"}
LOSS = {"calc_loss_batch", "calc_loss_loader"}
# file -> the names that must PASS (every other name: not found); no file may FAIL
AUTHOR = {
    "ch02/01_main-chapter-code/ch02.ipynb": DATA,
    "ch02/01_main-chapter-code/dataloader.ipynb": DATA,
    "ch03/01_main-chapter-code/ch03.ipynb": CH3 | CH3_EQUAL,
    "ch03/01_main-chapter-code/multihead-attention.ipynb": {
        "GPTDatasetV1",
        "MultiHeadAttentionWrapper",
        "MultiHeadAttention",
        "MultiHeadAttentionWrapper == MultiHeadAttention",
    },
    "ch04/01_main-chapter-code/ch04.ipynb": CH4,
    "ch04/01_main-chapter-code/gpt.py": DATA | {"MultiHeadAttention"} | CH4,
    "ch04/01_main-chapter-code/previous_chapters.py": DATA | {"MultiHeadAttention"},
    "ch04/03_kv-cache/gpt_ch04.py": {"MultiHeadAttention"} | CH4,
    "ch04/03_kv-cache/gpt_with_kv_cache.py": {"MultiHeadAttention"} | CH4,
    "ch04/03_kv-cache/gpt_with_kv_cache_optimized.py": {"MultiHeadAttention"} | CH4,
    "ch05/01_main-chapter-code/ch05.ipynb": LOSS | {"generate"},
    "ch05/01_main-chapter-code/gpt_generate.py": {"generate"},
    "ch05/01_main-chapter-code/gpt_train.py": LOSS,
    "ch05/01_main-chapter-code/previous_chapters.py": DATA | {"MultiHeadAttention"} | CH4,
    "appendix-D/01_main-chapter-code/previous_chapters.py": DATA | {"MultiHeadAttention"} | CH4 | LOSS,
    "appendix-D/01_main-chapter-code/appendix-D.ipynb": {"train_model"},
}
PACKAGE = {
    "ch02": DATA,
    "ch03": CH3 | CH3_EQUAL,
    "ch04": CH4,
    "ch05": LOSS | {"generate"},
    "kv_cache/gpt2": CH4 - {"generate_text_simple"} | {"MultiHeadAttention"},
    "appendix_d": {"train_model"},
}
needs_book = pytest.mark.skipif(not BOOK.is_dir(), reason="../shared/peers is not beside the repository")


def run(capsys, *args) -> tuple[int, str]:
    code = main(["check-book", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def statuses(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\S+(?: == \S+)?)\s+(PASS|FAIL|not found|could not construct)", text, re.M))


def passed(text: str) -> set[str]:
    return {n for n, s in statuses(text).items() if s == "PASS"}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@needs_book
def test_every_file_of_the_book_is_listed():
    files = {str(p.relative_to(BOOK)) for p in BOOK.rglob("*") if p.suffix in (".py", ".ipynb")}
    assert files == set(AUTHOR)


@needs_book
@pytest.mark.parametrize("name", sorted(AUTHOR))
def test_the_authors_code_passes_offline_without_running_it(capsys, name):
    code, text = run(capsys, BOOK / name, *FAST)
    assert "FAIL" not in text and "could not construct" not in text, text
    assert passed(text) == AUTHOR[name], text
    assert "Traceback" not in text and "ConnectionError" not in text, text
    unloaded = re.findall(r"^not loaded: .*$", text, re.M)
    if name.endswith("ch05.ipynb"):  # the snapshot has no gpt_download.py: named, exit 1
        assert len(unloaded) == 1 and "needs the module 'gpt_download'" in unloaded[0], text
        assert code == 1
    elif name.endswith("gpt_generate.py") and not all(map(_installed, ("tensorflow", "requests", "tqdm"))):
        assert unloaded and code == 1, text
    else:
        assert unloaded == [] and code == 0, text


@needs_book
def test_the_book_notes_are_said_where_they_belong(capsys):
    _, text = run(capsys, BOOK / "ch05/01_main-chapter-code/ch05.ipynb", *FAST, "--only", "generate")
    assert "as the book's own generate does: min_val = top_logits[:, -1] has shape (B,)" in text
    _, text = run(capsys, BOOK / "ch04/01_main-chapter-code/gpt.py", *FAST, "--only", "GELU")
    assert "torch.tensor(2.0 / torch.pi)" in text
    _, text = run(capsys, BOOK / "ch04/03_kv-cache/gpt_with_kv_cache.py", *FAST, "--only", "TransformerBlock")
    assert "its forward takes use_cache beyond x" in text
    _, text = run(
        capsys,
        BOOK / "ch03/01_main-chapter-code/multihead-attention.ipynb",
        *FAST,
        "--only",
        "MultiHeadAttentionWrapper",
    )
    assert "has out_proj, which the book's does not: compared with it set to the identity" in text
    _, text = run(capsys, BOOK / "ch05/01_main-chapter-code/gpt_train.py", *FAST)
    assert 'if __name__ == "__main__"' in text  # what was not run is said


def plant(source: str, old: str, new: str) -> str:
    assert source.count(old) >= 1, old
    return source.replace(old, new)


def plant_in_notebook(path: Path, old: str, new: str) -> None:
    nb = json.loads(path.read_text())
    hits = 0
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if old in text:
            hits += 1
            cell["source"] = text.replace(old, new).splitlines(keepends=True)
    assert hits, old
    path.write_text(json.dumps(nb))


@needs_book
def test_a_mistake_planted_in_the_authors_script_is_found_and_named(capsys, tmp_path):
    folder = tmp_path / "ch04"
    shutil.copytree(BOOK / "ch04/01_main-chapter-code", folder)
    gpt = folder / "gpt.py"
    gpt.write_text(
        plant(gpt.read_text(), "var = x.var(dim=-1, keepdim=True, unbiased=False)", "var = x.var(dim=-1, keepdim=True)")
    )
    code, text = run(capsys, gpt, *FAST, "--only", "LayerNorm,TransformerBlock")
    assert code == 1 and statuses(text) == {"LayerNorm": "FAIL", "TransformerBlock": "PASS"}, text
    assert "(unbiased-variance)" in text, text


@needs_book
def test_a_mistake_planted_in_the_authors_notebook_is_found_and_named(capsys, tmp_path):
    nb = tmp_path / "ch03.ipynb"
    shutil.copy(BOOK / "ch03/01_main-chapter-code/ch03.ipynb", nb)
    plant_in_notebook(nb, "attn_scores.masked_fill_(mask_bool, -torch.inf)", "pass")
    code, text = run(capsys, nb, *FAST, "--only", "MultiHeadAttention")
    assert code == 1 and statuses(text) == {"MultiHeadAttention": "FAIL"}, text
    assert "(no-causal-mask)" in text, text


@pytest.mark.skipif(not _installed("llms_from_scratch"), reason="pip install --no-deps llms-from-scratch")
@pytest.mark.parametrize("module", sorted(PACKAGE))
def test_the_books_package_passes(capsys, module):
    import llms_from_scratch

    path = Path(llms_from_scratch.__file__).parent / f"{module}.py"
    code, text = run(capsys, path, *FAST)
    assert code == 0 and passed(text) == PACKAGE[module], text
    assert "FAIL" not in text and "not loaded" not in text, text


@pytest.mark.skipif(not _installed("llms_from_scratch"), reason="pip install --no-deps llms-from-scratch")
def test_a_mistake_planted_in_a_copy_of_the_package_is_found(capsys, tmp_path):
    import llms_from_scratch

    copy = tmp_path / "llms_from_scratch"
    shutil.copytree(
        Path(llms_from_scratch.__file__).parent, copy, ignore=shutil.ignore_patterns("tests", "__pycache__")
    )
    ch04 = copy / "ch04.py"
    ch04.write_text(plant(ch04.read_text(), "0.044715", "0.0447"))
    code, text = run(capsys, ch04, *FAST, "--only", "GELU")
    assert code == 1 and statuses(text) == {"GELU": "FAIL"} and "(gelu-constant)" in text, text


@needs_book
@pytest.mark.parametrize(
    ("old", "new", "headline"),
    [
        ("lr = initial_lr + global_step * lr_increment", "lr = peak_lr", "learning rates differs"),
        ("torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n", "pass\n", "after 4 steps differs"),
    ],
    ids=["no-warmup", "no-clipping"],
)
def test_a_mistake_planted_in_appendix_d_fails_train_model(capsys, tmp_path, old, new, headline):
    folder = tmp_path / "appendix-D"
    shutil.copytree(BOOK / "appendix-D/01_main-chapter-code", folder)
    plant_in_notebook(folder / "appendix-D.ipynb", old, new)
    code, text = run(capsys, folder / "appendix-D.ipynb", *FAST)
    assert code == 1 and statuses(text)["train_model"] == "FAIL" and headline in text, text


@needs_book
def test_the_printed_appendix_d_clipping_is_the_books_and_said_so(capsys, tmp_path):
    folder = tmp_path / "appendix-D"
    shutil.copytree(BOOK / "appendix-D/01_main-chapter-code", folder)
    plant_in_notebook(folder / "appendix-D.ipynb", "ORIG_BOOK_VERSION = False", "ORIG_BOOK_VERSION = True")
    code, text = run(capsys, folder / "appendix-D.ipynb", *FAST)
    assert code == 0 and statuses(text)["train_model"] == "PASS", text
    assert "as the printed appendix D does" in text
