"""check-book loads a reader's code definitions-only: scripts, notebooks, sibling modules, packages.

No torch check runs here: these are the loader's own rules, each with the file that breaks it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from parity.book.check import _near_miss, load_reader
from parity.user_code import load_file, notebook_cells

LAYER_NORM = """
import torch
import torch.nn as nn


class LayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift
"""


def script(marker: Path) -> str:
    """A chapter file that trains (here: writes a file and exits) at module level."""
    return f"""{LAYER_NORM}
GPT_CONFIG = {{"emb_dim": 768, "n_layers": 12}}
WIDTH = GPT_CONFIG["emb_dim"]
open({str(marker)!r}, "w").write("trained")
for epoch in range(10):
    print("epoch", epoch)
import sys
sys.exit(0)
if __name__ == "__main__":
    open({str(marker)!r}, "w").write("main")
"""


def test_a_script_loads_its_definitions_and_nothing_else(tmp_path):
    marker = tmp_path / "trained.txt"
    (tmp_path / "chapter.py").write_text(script(marker))
    loaded = load_file(tmp_path / "chapter.py")
    assert not marker.exists(), "module-level code ran"
    assert loaded.errors == []
    names = vars(loaded.module)
    assert "LayerNorm" in names and names["GPT_CONFIG"]["emb_dim"] == 768 and names["WIDTH"] == 768
    skipped = " | ".join(loaded.skipped)
    assert "open(" in skipped and "for epoch in range(10)" in skipped and "sys.exit(0)" in skipped
    assert 'if __name__ == "__main__"' in skipped
    assert "4 other top-level statements not run" in loaded.summary()


def notebook(path: Path, cells: list[str]) -> Path:
    nb = {
        "cells": [{"cell_type": "code", "source": c.splitlines(keepends=True), "metadata": {}} for c in cells]
        + [{"cell_type": "markdown", "source": ["# not code"], "metadata": {}}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


def test_a_notebook_is_its_code_cells_in_order_without_magics(tmp_path):
    marker = tmp_path / "ran.txt"
    nb = notebook(
        tmp_path / "ch04.ipynb",
        [
            "%matplotlib inline\n!pip install tiktoken\nimport torch",
            f"%%capture\nopen({str(marker)!r}, 'w')",
            LAYER_NORM,
            "ln = LayerNorm(4)\nx = ln.scale  # uses what was not run",
            "this is not python(",
        ],
    )
    assert [n for n, _ in notebook_cells(nb)] == [1, 3, 4, 5]  # the %% cell is left out
    loaded = load_file(nb)
    assert not marker.exists()
    assert loaded.errors == [] and "LayerNorm" in vars(loaded.module)
    skipped = " | ".join(loaded.skipped)
    assert "cell 4 line 1: ln = LayerNorm(4)" in skipped and "(uses what was not run)" in skipped
    assert "cell 5: not plain Python" in skipped


def test_sibling_modules_load_definitions_only_and_never_collide(tmp_path):
    marker = tmp_path / "sibling-ran.txt"
    for chapter, width in (("ch04", 4), ("ch05", 5)):
        folder = tmp_path / chapter
        folder.mkdir()
        (folder / "previous_chapters.py").write_text(f"{LAYER_NORM}\nWIDTH = {width}\nopen({str(marker)!r}, 'w')\n")
        (folder / "main.py").write_text("from previous_chapters import LayerNorm, WIDTH\nSEEN = WIDTH\n")
    before = set(sys.modules)
    first, second = load_file(tmp_path / "ch04" / "main.py"), load_file(tmp_path / "ch05" / "main.py")
    assert vars(first.module)["SEEN"] == 4 and vars(second.module)["SEEN"] == 5
    assert not marker.exists()
    assert "previous_chapters" not in set(sys.modules) - before  # forgotten after each file
    assert any(s.startswith("previous_chapters.py line") for s in first.skipped)


def test_a_package_file_imports_its_package_by_name_and_relatively(tmp_path):
    pkg = tmp_path / "mygpt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text("EPS = 1e-5\nprint('imported utils')\n")
    (pkg / "layers.py").write_text(f"from mygpt.utils import EPS\nfrom .utils import EPS as EPS2\n{LAYER_NORM}")
    loaded = load_file(pkg / "layers.py")
    assert loaded.errors == [], loaded.errors
    assert vars(loaded.module)["EPS"] == vars(loaded.module)["EPS2"] == 1e-5
    assert "mygpt" not in sys.modules


def test_an_installed_package_is_never_loaded_definitions_only(tmp_path):
    """A file inside site-packages (the book's own package) is the reader's; torch beside it is not."""
    site = tmp_path / "site-packages"
    (site / "bookpkg").mkdir(parents=True)
    (site / "bookpkg" / "__init__.py").write_text("")
    (site / "bookpkg" / "ch04.py").write_text(LAYER_NORM)
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("raise RuntimeError('a fake torch was imported')\n")
    loaded = load_file(site / "bookpkg" / "ch04.py")
    assert loaded.errors == [] and "LayerNorm" in vars(loaded.module)
    assert vars(loaded.module)["torch"].__file__ != str(site / "torch" / "__init__.py")


def test_a_missing_dependency_is_one_line_naming_it_and_the_rest_loads(tmp_path):
    (tmp_path / "gpt.py").write_text(f"import tensorflow_not_here as tf\n{LAYER_NORM}")
    loaded = load_file(tmp_path / "gpt.py")
    assert loaded.errors == [
        "line 1: needs the module 'tensorflow_not_here', not installed here (pip install tensorflow_not_here, "
        "or put your tensorflow_not_here.py beside it)"
    ]
    assert "LayerNorm" in vars(loaded.module)


def test_future_annotations_hold_for_every_statement(tmp_path):
    (tmp_path / "typed.py").write_text(
        "from __future__ import annotations\n\ndef build(cfg: Config) -> Model:\n    return None\n"
    )
    assert load_file(tmp_path / "typed.py").errors == []  # without the flag, Config would be looked up


@pytest.mark.parametrize(
    ("name", "book", "near"),
    [
        ("CasualAttention", "CausalAttention", True),  # two neighbours swapped
        ("SelfAttention_V1", "SelfAttention_v1", True),
        ("GeLU", "GELU", True),
        ("LayerNorms", "LayerNorm", True),
        ("GLU", "GELU", False),  # short names: case only
        ("Attention", "CausalAttention", False),
        ("FeedForwardNet", "FeedForward", False),
    ],
)
def test_near_miss_names(name, book, near):
    assert _near_miss(name, book) is near


def test_a_near_miss_is_found_under_the_book_name_once(tmp_path):
    (tmp_path / "ch03.py").write_text(LAYER_NORM.replace("class LayerNorm", "class layernorm") + "\nclass GeLU: pass\n")
    reader = load_reader(tmp_path / "ch03.py")
    assert reader.renamed == {"LayerNorm": "layernorm", "GELU": "GeLU"}
    (tmp_path / "v1.py").write_text("class SelfAttention_V1: pass\n")
    assert load_reader(tmp_path / "v1.py").renamed == {"SelfAttention_v1": "SelfAttention_V1"}  # not _v2 too


def test_folders_skip_environments_checkpoints_and_tests(tmp_path):
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text("raise SystemExit(3)\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "ch04-checkpoint.ipynb").write_text("{}")
    (tmp_path / "test_mine.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "ch04.py").write_text(LAYER_NORM)
    reader = load_reader(tmp_path)
    assert reader.files == 1 and list(reader.found) == ["LayerNorm"] and reader.problems == []


def test_the_readers_tiktoken_works_offline():
    import tiktoken

    from npgpt.tokenizer import get_tokenizer, serve_gpt2_offline

    serve_gpt2_offline()
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    enc = tiktoken.get_encoding("gpt2")
    assert enc.encode(text, allowed_special={"<|endoftext|>"}) == get_tokenizer().encode(
        text, allowed_special={"<|endoftext|>"}
    )


def test_sys_path_lines_between_chapter_folders_work_definitions_only(tmp_path):
    marker = tmp_path / "ch04-ran.txt"
    (tmp_path / "ch04").mkdir()
    (tmp_path / "ch04" / "gpt.py").write_text(f"{LAYER_NORM}\nopen({str(marker)!r}, 'w')\n")
    (tmp_path / "ch05").mkdir()
    (tmp_path / "ch05" / "train.py").write_text(
        "import os\nimport sys\nsys.path.append(os.path.abspath('../ch04'))\n"
        "from gpt import LayerNorm\n\n\ndef calc_loss_batch(input_batch, target_batch, model, device):\n    return 0\n"
    )
    path_before = list(sys.path)
    loaded = load_file(tmp_path / "ch05" / "train.py")
    assert loaded.errors == [], loaded.errors
    assert vars(loaded.module)["LayerNorm"].__name__ == "LayerNorm"
    assert not marker.exists() and sys.path == path_before and "gpt" not in sys.modules
    assert any(s.startswith("gpt.py line") for s in loaded.skipped)


def test_a_constant_updated_in_place_is_kept_and_a_computed_update_is_not(tmp_path):
    (tmp_path / "cfg.py").write_text(
        "CFG = {'emb_dim': 768, 'n_layers': 12}\nCFG.update({'emb_dim': 1024})\nCFG.update(load_from_disk())\n"
    )
    loaded = load_file(tmp_path / "cfg.py")
    assert vars(loaded.module)["CFG"] == {"emb_dim": 1024, "n_layers": 12} and loaded.errors == []
    assert loaded.skipped == ["line 3: CFG.update(load_from_disk())"]


def test_an_update_of_a_constant_made_by_a_call_is_not_run_either(tmp_path):
    (tmp_path / "cfg.py").write_text("NEW = dict_from_somewhere()\nNEW.update({'emb_dim': 1024})\n")
    loaded = load_file(tmp_path / "cfg.py")
    assert loaded.errors == [] and "line 2: NEW.update({'emb_dim': 1024}) (uses what was not run)" in loaded.skipped


def test_the_books_device_line_and_tokenizer_line_are_kept(tmp_path):
    (tmp_path / "ch05.py").write_text(
        "import tiktoken\nimport torch\n"
        'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n'
        'tokenizer = tiktoken.get_encoding("gpt2")\n'
    )
    from npgpt.tokenizer import serve_gpt2_offline

    serve_gpt2_offline()  # as check-book does before loading
    loaded = load_file(tmp_path / "ch05.py")
    names = vars(loaded.module)
    assert loaded.errors == [] and loaded.skipped == []
    assert str(names["device"]) in ("cpu", "cuda") and names["tokenizer"].encode("Hello") == [15496]


def test_a_nested_time_limit_leaves_the_outer_one_armed():
    """An inner limit (building a model inside a check's load call) must not cancel the outer one."""
    import time

    from parity.user_code import CallTimeoutError, time_limit

    with pytest.raises(CallTimeoutError, match=r"outer took longer than 0\.3 s"), time_limit("outer", 0.3):
        with time_limit("inner", 5.0):
            pass
        time.sleep(2)  # still under the outer limit
