"""``npgpt check-book`` on reader files written here: the book's chapters 2-5, correct, and one
copy per catalogued mistake with exactly that mistake. The correct file passes; each copy fails
in the class the mistake is in (and in nothing built on it: composites are checked with the
reference's sub-modules), and the diagnosis names the mistake."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from parity.book.targets import TARGETS
from parity.bugs import CATALOG
from parity.cli import main

CORRECT = Path(__file__).parent / "reader_code" / "book_chapters.py"
FAST = ["--examples", "10"]

# catalog entry -> (class or function edited, text in it, the mistake's text[, more pairs])
MISTAKES = {
    "unbiased-variance": ("LayerNorm", "keepdim=True, unbiased=False)", "keepdim=True)"),
    "eps-outside-sqrt": ("LayerNorm", "torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)"),
    "exact-gelu": ("GELU", "return 0.5 * x *", "return torch.nn.functional.gelu(x)  #"),
    "gelu-constant": ("GELU", "0.044715", "0.0447"),
    "no-attention-scaling": ("MultiHeadAttention", "attn_scores / keys.shape[-1] ** 0.5", "attn_scores"),
    "scale-by-emb-dim": ("MultiHeadAttention", "/ keys.shape[-1] ** 0.5", "/ self.d_out ** 0.5"),
    "no-causal-mask": ("MultiHeadAttention", "attn_scores.masked_fill_(mask_bool, -torch.inf)", "pass"),
    "mask-diagonal": ("MultiHeadAttention", "diagonal=1", "diagonal=0"),
    "mask-one-future": ("MultiHeadAttention", "diagonal=1", "diagonal=2"),
    "softmax-wrong-axis": ("MultiHeadAttention", "** 0.5, dim=-1)", "** 0.5, dim=-2)"),
    "dropout-before-mask": (
        "MultiHeadAttention",
        "\n        attn_weights = self.dropout(attn_weights)",
        "",
        "attn_scores.masked_fill_(mask_bool, -torch.inf)",
        "attn_scores = self.dropout(attn_scores)\n        attn_scores.masked_fill_(mask_bool, -torch.inf)",
    ),
    "heads-reshape": ("MultiHeadAttention", "self.num_heads, self.head_dim).transpose(1, 2)",
                      "self.num_heads, self.head_dim).reshape(b, self.num_heads, num_tokens, self.head_dim)"),
    "post-norm": (
        "TransformerBlock",
        "x = self.norm1(x)\n        x = self.att(x)\n        x = self.drop_shortcut(x)\n        x = x + shortcut",
        "x = self.att(x)\n        x = self.drop_shortcut(x)\n        x = self.norm1(x + shortcut)",
        "x = self.norm2(x)\n        x = self.ff(x)\n        x = self.drop_shortcut(x)\n        x = x + shortcut",
        "x = self.ff(x)\n        x = self.drop_shortcut(x)\n        x = self.norm2(x + shortcut)",
    ),
    "missing-residual": ("TransformerBlock", "x = x + shortcut", "x = x"),
    "missing-final-norm": ("GPTModel", "x = self.final_norm(x)", "x = x"),
    "no-position-embedding": ("GPTModel", "x = tok_embeds + pos_embeds", "x = tok_embeds"),
    "loss-not-flattened": ("calc_loss_batch", "cross_entropy(logits.flatten(0, 1), target_batch.flatten())",
                           "cross_entropy(logits, target_batch)"),
    "targets-not-shifted": ("GPTDatasetV1", "token_ids[i + 1 : i + max_length + 1]", "token_ids[i : i + max_length]"),
    "top-k-plus-one": ("generate", "torch.topk(logits, top_k)", "torch.topk(logits, top_k + 1)"),
    "temperature-multiplied": ("generate", "logits = logits / temperature", "logits = logits * temperature"),
}  # fmt: skip
NOT_IN_THE_BOOK = {"kv-cache-positions"}  # the book's chapters 2-5 have no KV cache; npgpt check covers it
EQUALITIES = ({"SelfAttention_v1", "SelfAttention_v2"}, {"MultiHeadAttentionWrapper", "MultiHeadAttention"})


def names_affected(source: str, name: str) -> list[str]:
    """``name`` and every definition of ``source`` that uses it, directly or through another (read
    from the code), with the partners of chapter 3's equalities among them: the only book names an
    edit inside ``name`` can change. The correct file passes every name (the test above)."""
    defs = {n.name: n for n in ast.parse(source).body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    uses = {d: {x.id for x in ast.walk(node) if isinstance(x, ast.Name) and x.id in defs} for d, node in defs.items()}
    affected = {name}
    while grown := {d for d, used in uses.items() if used & affected} - affected:
        affected |= grown
    for pair in EQUALITIES:
        if affected & pair:
            affected |= pair
    return [n for n in defs if n in affected and n in TARGETS]  # helpers (evaluate_model) pass it on


def with_mistake(source: str, name: str, *edits: str) -> str:
    """The source with each (old, new) pair of ``edits`` replaced inside the definition of ``name`` only."""
    start = re.search(rf"^(class|def) {name}\b", source, re.M).start()
    end = re.compile(r"^(class|def) ", re.M).search(source, start + 1)
    end = end.start() if end else len(source)
    body = source[start:end]
    for old, new in zip(edits[::2], edits[1::2], strict=True):
        assert old in body, (name, old)
        body = body.replace(old, new)
    return source[:start] + body + source[end:]


def run(capsys, *args) -> tuple[int, str]:
    code = main(["check-book", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out + out.err


def status_of(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\S+(?: == \S+)?)\s+(PASS|FAIL|not found|could not construct)", text, re.M))


def test_every_catalog_entry_has_a_reader_file_or_a_reason():
    assert set(MISTAKES) | NOT_IN_THE_BOOK == set(CATALOG)


def test_the_correct_chapters_pass_every_name(capsys, tmp_path):
    report = tmp_path / "book.json"
    code, text = run(capsys, CORRECT, "--json", report, *FAST)
    assert code == 0, text
    statuses = status_of(text)
    assert len(statuses) == 19 and set(statuses.values()) == {"PASS"}, statuses  # 17 names + 2 equalities
    saved = json.loads(report.read_text())
    assert [f["status"] for f in saved["findings"]].count("PASS") == 19


@pytest.mark.parametrize("bug", list(MISTAKES))
def test_each_mistake_fails_its_class_only_and_is_named(capsys, tmp_path, bug):
    where, *edits = MISTAKES[bug]
    path = tmp_path / f"{bug}.py"
    path.write_text(with_mistake(CORRECT.read_text(), where, *edits))
    affected = names_affected(CORRECT.read_text(), where)
    code, text = run(capsys, path, *FAST, "--only", ",".join(affected))
    assert code == 1, text
    failed = {name for name, status in status_of(text).items() if status != "PASS"}
    # an equality that involves the class fails with it (chapter 3's wrapper == MultiHeadAttention)
    assert {where if where in n.split(" == ") else n for n in failed} == {where}, text
    assert f"({bug})" in text and "diagnosis: your" in text, text
    assert f"reproduce: npgpt check-book {path} --only {where} --example" in text


def test_the_reproduce_command_checks_the_one_case(capsys, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(with_mistake(CORRECT.read_text(), "LayerNorm", "keepdim=True, unbiased=False)", "keepdim=True)"))
    code, text = run(capsys, path, *FAST, "--only", "LayerNorm")
    command = re.search(r"reproduce: npgpt check-book (.*)", text).group(1).split()
    code2, again = run(capsys, *command)
    assert code == code2 == 1 and "unbiased-variance" in again


def test_broken_files_are_a_line_each_and_the_other_names_are_still_checked(capsys, tmp_path):
    (tmp_path / "syntax.py").write_text("class LayerNorm(:\n")
    code, text = run(capsys, tmp_path / "syntax.py")
    assert code == 2 and "SyntaxError at line 1" in text and "Traceback" not in text, text
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "broken.py").write_text("import no_such_module_here\n")
    source = CORRECT.read_text()
    source = with_mistake(
        source,
        "GELU",
        "def forward(self, x):",
        "def __init__(self):\n        raise RuntimeError('boom')\n\n    def forward(self, x):",
    )
    source = with_mistake(
        source,
        "LayerNorm",
        "return self.scale * norm_x + self.shift",
        "return (self.scale * norm_x + self.shift)[..., :1]",
    )
    (folder / "chapters.py").write_text(source)
    code, text = run(capsys, folder, *FAST, "--only", "GELU,LayerNorm,FeedForward,GPTDatasetV1")
    assert code == 1 and "Traceback" not in text, text
    assert "broken.py: line 1: needs the module 'no_such_module_here', not installed here" in text
    assert re.search(r"^GELU\s+could not construct  GELU\(\) raised RuntimeError: boom", text, re.M), text
    assert re.search(r"^LayerNorm\s+FAIL  output: shape or dtype differs", text, re.M), text
    assert status_of(text)["GPTDatasetV1"] == "PASS"
    assert re.search(r"^FeedForward\s+could not construct  FeedForward\(\.\.\.\) raised RuntimeError: boom", text, re.M)
    code, text = run(capsys, CORRECT, "--only", "NotABookName")
    assert code == 2 and "not a name check-book knows" in text
    (tmp_path / "nothing.py").write_text("x = 1\n")
    code, text = run(capsys, tmp_path / "nothing.py")
    assert code == 2 and "none of the book's names" in text


def test_near_miss_names_and_case_only_parameter_names_are_checked_as_the_books(capsys, tmp_path):
    source = CORRECT.read_text().replace("class CausalAttention(", "class CasualAttention(")
    start = source.index("class MultiHeadAttention(")
    end = source.index("\nclass ", start + 1)
    source = source[:start] + source[start:end].replace("W_query", "w_query") + source[end:]
    (tmp_path / "typos.py").write_text(source)
    code, text = run(capsys, tmp_path / "typos.py", *FAST, "--only", "CausalAttention,MultiHeadAttention")
    assert code == 0 and status_of(text) == {"CausalAttention": "PASS", "MultiHeadAttention": "PASS"}, text
    assert "(your CasualAttention, checked as the book's CausalAttention)" in text
    assert "differ from the book's only in case, taken as the book's: w_query.weight for W_query.weight" in text
    # the negative control: the same typo with a real mistake still fails, under the book's name
    broken = source.replace("diagonal=1", "diagonal=0")
    (tmp_path / "broken.py").write_text(broken)
    code, text = run(capsys, tmp_path / "broken.py", *FAST, "--only", "CausalAttention")
    assert code == 1 and status_of(text) == {"CausalAttention": "FAIL"}, text


def test_the_headline_is_the_output_when_the_output_differs():
    from parity.book.check import _worst
    from parity.tolerances import Comparison, tolerance

    tol = tolerance("float64", "fwd")
    output = Comparison("output", (2, 3), 0.5, 0.1, tol, False)
    grad = Comparison("grad scale", (3,), 1.0, 1e307, tol, False)  # a near-zero reference gradient
    assert _worst([grad, output]).startswith("output differs by 5.00e-01")
    assert _worst([grad, Comparison("output", (2, 3), 0.0, 0.0, tol, True)]).startswith("grad scale differs")


def test_a_missing_layer_does_not_hide_the_mistake_behind_it(capsys, tmp_path):
    """No out_proj and masked_fill's result thrown away: both are said, the mask by its catalog name."""
    source = with_mistake(
        CORRECT.read_text(),
        "MultiHeadAttention",
        "        self.out_proj = nn.Linear(d_out, d_out)\n",
        "",
        "return self.out_proj(context_vec)",
        "return context_vec",
    )
    (tmp_path / "no_proj.py").write_text(source)
    code, text = run(capsys, tmp_path / "no_proj.py", *FAST, "--only", "MultiHeadAttention")
    assert code == 1 and "FAIL  no out_proj: the book's MultiHeadAttention ends with self.out_proj" in text, text
    assert "with it as the identity, the rest matches" in text  # the missing layer alone
    masked = with_mistake(source, "MultiHeadAttention", "attn_scores.masked_fill_(", "attn_scores.masked_fill(")
    (tmp_path / "no_proj_no_mask.py").write_text(masked)
    code, text = run(capsys, tmp_path / "no_proj_no_mask.py", *FAST, "--only", "MultiHeadAttention")
    assert code == 1 and "no out_proj" in text and "(no-causal-mask)" in text, text
