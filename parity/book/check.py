"""``npgpt check-book``: a reader's own chapter 2-5 code, name by name, against the NumPy reference.

For each book name found in the reader's file or package: draw cases with Hypothesis (T = 1,
batch 1, one head, repeated token ids are all in reach), float64 first, then float32; compare the
outputs, and through torch autograd the gradients of the input and of every parameter; on a
failure let Hypothesis shrink the case to the smallest one that still fails, and try the catalog
of classic mistakes (parity/bugs.py) on it: a mistake whose reference reproduces the reader's
outputs is named. A composite class (FeedForward, TransformerBlock, GPTModel) is checked with its
sub-modules replaced by the reference's (torchgpt's, same weights), so a wrong LayerNorm is
reported in LayerNorm, not again in every class that uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from npgpt.errors import NpgptError
from parity import user_code
from parity.book import targets
from parity.book.cases import NOTES, Example, UnusableError, drain_notes, draw_x
from parity.book.run_torch import load_into
from parity.book.targets import TARGETS, Target
from parity.bugs import CATALOG, inject
from parity.tolerances import Comparison, compare, tolerance
from parity.torch_module import get_path
from parity.user_code import CallTimeoutError, cut, time_limit, user_raised

TYPICAL = Example(B=2, T=4, H=2, D=3, seed=0)  # tried first: most mistakes show on it at once


@dataclasses.dataclass
class Finding:
    name: str
    status: str  # PASS, FAIL, not found, could not construct
    detail: str = ""
    case: Example | None = None
    dtype: str = ""
    diagnosis: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    command: str = ""
    rows: list[Comparison] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "could not construct")

    def lines(self) -> list[str]:
        head = f"{self.name:<26} {self.status}"
        out = [f"{head}  {self.detail}" if self.detail else head]
        if self.case is not None and self.failed:
            out.append(f"{'':<26}   smallest failing case: {self.case} ({self.dtype})")
        if self.diagnosis:
            out.append(f"{'':<26}   diagnosis: {self.diagnosis}")
        out += [f"{'':<26}   {note}" for note in self.notes]
        if self.command:
            out.append(f"{'':<26}   reproduce: {self.command}")
        return out


# -- the reader's code ---------------------------------------------------------------------------


@dataclasses.dataclass
class Reader:
    """The book's names found in the reader's code, and what loading it said."""

    found: dict[str, Any] = dataclasses.field(default_factory=dict)  # book name -> the reader's object
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # book name -> the reader's near-miss name
    problems: list[str] = dataclasses.field(default_factory=list)  # files or statements that did not load
    notes: list[str] = dataclasses.field(default_factory=list)  # what was not run
    files: int = 0


SKIP_DIRS = {"__pycache__", "site-packages", "node_modules"}


def reader_files(path: Path) -> list[Path]:
    """The .py files and notebooks of a folder (tests, hidden folders and environments left out)."""
    out = []
    for p in sorted(path.rglob("*")):
        parts = p.relative_to(path).parts
        if any(part.startswith(".") or part in SKIP_DIRS for part in parts) or "test" in p.name:
            continue
        if p.suffix in (".py", ".ipynb") and p.is_file() and not p.name.endswith("-checkpoint.ipynb"):
            out.append(p)
    return out


def load_reader(path: str | Path) -> Reader:
    """The book's names defined in a file or notebook, or in those of a folder (first found wins),
    loaded definitions-only (parity/user_code.py)."""
    from npgpt.tokenizer import serve_gpt2_offline

    path = Path(path)
    if not path.exists():
        raise NpgptError(f"{path} does not exist; give your chapter's .py file or notebook, or the folder of your code")
    if path.is_file() and path.suffix not in (".py", ".ipynb"):
        raise NpgptError(f"{path} is neither a .py file nor a .ipynb notebook; give one of those, or a folder")
    files = reader_files(path) if path.is_dir() else [path]
    if not files:
        raise NpgptError(f"{path} holds no .py files or notebooks")
    serve_gpt2_offline()  # the reader's tiktoken.get_encoding("gpt2") works with no network
    out = Reader(files=len(files))
    said: set[str] = set()
    for file in files:
        try:
            loaded = user_code.load_file(file)
        except SyntaxError as exc:
            out.problems.append(f"{file}: could not be read: SyntaxError at line {exc.lineno}: {exc.msg}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            out.problems.append(f"{file}: could not be read: {exc}")
            continue
        out.problems += [f"{file}: {error}" for error in loaded.errors]
        # a module several files import (previous_chapters.py): what it did not run is said once
        loaded.skipped = [s for s in loaded.skipped if not (s.split(" ")[0].endswith(".py") and s in said)]
        said.update(loaded.skipped)
        if loaded.summary():
            out.notes.append(loaded.summary())
        own = {
            k: v
            for k, v in vars(loaded.module).items()
            if getattr(v, "__module__", None) == loaded.module.__name__ and callable(v)
        }
        for name in TARGETS:
            if name in own and name not in out.found:
                out.found[name] = own[name]
        book_lower = {n.lower() for n in TARGETS}
        for name in TARGETS:
            fits = [k for k in own if k not in TARGETS and _kind_fits(name, own[k])]
            near = [k for k in fits if k.lower() == name.lower()] or [
                k for k in fits if k.lower() not in book_lower and _near_miss(k, name)
            ]
            if name not in out.found and len(near) == 1:
                out.found[name], out.renamed[name] = own[near[0]], near[0]
    return out


def _kind_fits(book_name: str, obj: Any) -> bool:
    """A class for a class of the book's, a function for a function."""
    return inspect.isclass(obj) == (TARGETS[book_name].kind in ("module", "dataset"))


def _near_miss(name: str, book_name: str) -> bool:
    """``name`` is the book's name up to case, or (for names of five letters or more) up to one
    typo: a letter added, dropped, changed, or two neighbours swapped (CasualAttention)."""
    a, b = name.lower(), book_name.lower()
    if a == b:
        return True
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        i, j = diff if len(diff) == 2 else (0, 0)
        return j == i + 1 and (a[i], a[j]) == (b[j], b[i])  # two neighbours swapped
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def _raised(exc: BaseException) -> str:
    """What the reader's code raised; a check-book finding (the object cannot be run as the book's) as itself."""
    if isinstance(exc, UnusableError | CallTimeoutError):
        return _first_line(exc)
    return f"raised {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    return cut((str(exc).strip().splitlines() or [""])[0], 200)


# -- one case ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Attempt:
    rows: list[Comparison]
    error: str = ""  # the reader's code raised (or could not be used): why
    construct_error: str = ""
    got: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # the reader's outputs
    ref: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # the reference's

    @property
    def ok(self) -> bool:
        return not self.error and not self.construct_error and all(r.ok for r in self.rows)


def _tolerance(target: Target, key: str, value: np.ndarray, dtype: str, strict: bool = False):
    if value.dtype.kind in "iub" or target.tier == "exact":
        return tolerance(dtype, "exact")
    if dtype == "float64" and not strict:
        return tolerance(dtype, "book")
    if target.tier == "model":
        return tolerance(dtype, "model")
    return tolerance(dtype, "bwd" if key.startswith("grad ") else "fwd")


def compare_outputs(
    target: Target, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], dtype: str, strict: bool = False
) -> list[Comparison]:
    rows = []
    for key, expected in ref.items():
        expected = np.asarray(expected)
        if key not in got:
            rows.append(Comparison(f"{key} (missing)", expected.shape, np.inf, np.inf, tolerance(dtype, "fwd"), False))
            continue
        actual = np.asarray(got[key])
        if expected.dtype.kind in "iub" or actual.dtype.kind in "iub":
            actual, expected = actual.astype(np.float64), expected.astype(np.float64)
        else:
            actual = actual.astype(expected.dtype)
        rows.append(compare(key, actual, expected, _tolerance(target, key, expected, dtype, strict)))
    return rows


_HUNG: dict[tuple[str, int], str] = {}  # (book name, the reader's object) -> its time-out, this run


def attempt(
    target: Target,
    obj: Any,
    case: Example,
    dtype: str,
    subs: Callable[[Any, Example], Any] | None,
    strict: bool = False,
) -> Attempt:
    """Build the reader's object for ``case`` (with the reference's sub-modules when ``subs``),
    run it and the reference, compare."""
    import torch

    if (target.name, id(obj)) in _HUNG:  # once past its time limit, it is not waited for again
        return Attempt([], error=_HUNG[(target.name, id(obj))])
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    try:
        with time_limit(f"building {target.name} for {case}"):
            built = target.build(obj, case)
        if subs is not None:
            built = subs(built, case)
    except BaseException as exc:
        if not user_raised(exc):
            raise
        return Attempt([], construct_error=f"{_call(target, case)} raised {type(exc).__name__}: {_first_line(exc)}")
    ref = target.reference(case, np.dtype(dtype))
    try:
        with time_limit(f"{target.name} on {case} ({dtype})"):
            got = target.run(built, case, torch, tdtype)
    except UnusableError as exc:
        return Attempt([], error=str(exc))
    except BaseException as exc:
        if not user_raised(exc):
            raise
        if isinstance(exc, CallTimeoutError):
            _HUNG[(target.name, id(obj))] = _raised(exc)
        return Attempt([], error=_raised(exc))
    return Attempt(compare_outputs(target, got, ref, dtype, strict), got=got, ref=ref)


def _call(target: Target, case: Example) -> str:
    args = {
        "LayerNorm": f"({case.C})", "GELU": "()", "SelfAttention_v1": f"({case.C}, {case.D})",
        "SelfAttention_v2": f"({case.C}, {case.D}, qkv_bias=False)",
    }  # fmt: skip
    return f"{target.name}{args.get(target.name, '(...)')}"


# -- the reference's sub-modules ---------------------------------------------------------------


def _reference_class(book_name: str, case: Example) -> Any:
    from torchgpt import model as tg

    cfg = case.book_cfg()
    return {
        "LayerNorm": lambda: tg.LayerNorm(case.C),
        "GELU": lambda: tg.GELU(),
        "FeedForward": lambda: tg.FeedForward(cfg),
        "MultiHeadAttention": lambda: tg.MultiHeadAttention(
            case.C, case.C, cfg["context_length"], cfg["drop_rate"], case.H, qkv_bias=True
        ),
        "TransformerBlock": lambda: tg.TransformerBlock(cfg),
    }[book_name]()


def _reference_function(book_name: str) -> Any:
    from torchgpt.data import GPTDatasetV1
    from torchgpt.train import calc_loss_batch

    return {"GPTDatasetV1": GPTDatasetV1, "calc_loss_batch": calc_loss_batch}[book_name]


def _extra_parameters(module: Any) -> list[str]:
    """The parameters of a sub-module's forward beyond the book's single input."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return []
    return [p.name for p in params[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def substitutions(target: Target) -> Callable[[Any, Example], Any]:
    """A function that gives the reader's object with its book sub-parts replaced by the
    reference's: a module's sub-modules (same names, so the book's weights load into them), or
    the book functions a function calls (swapped in its module's globals while it runs)."""

    def swap_modules(module: Any, case: Example) -> Any:
        for path, book_name in target.swaps:
            paths = [path]
            if "{i}" in path:
                container = get_path(module, path.split(".{i}")[0])
                paths = [path.format(i=i) for i in range(len(container))] if container is not None else []
            for p in paths:
                own = get_path(module, p)
                if own is None:
                    continue
                extra = _extra_parameters(own)
                if extra:  # a KV cache's forward(x, use_cache, start_pos, ...): the book's cannot stand in
                    NOTES.append(
                        f"(checked with your own {path}: its forward takes {', '.join(extra)} beyond x, which the "
                        f"book's {book_name} does not; your {type(own).__name__} has its own line)"
                    )
                    continue
                parent, _, leaf = p.rpartition(".")
                setattr(get_path(module, parent) if parent else module, leaf, _reference_class(book_name, case))
        return module

    def swap_globals(fn: Any, case: Example) -> Any:
        names = {book_name: _reference_function(book_name) for _, book_name in target.swaps}
        scope = getattr(fn, "__globals__", {})

        def call(*args: Any, **kwargs: Any) -> Any:
            saved = {n: scope[n] for n in names if n in scope}
            scope.update({n: f for n, f in names.items() if n in scope})
            try:
                return fn(*args, **kwargs)
            finally:
                scope.update(saved)

        return call

    return swap_modules if target.kind == "module" else swap_globals


# -- the search ---------------------------------------------------------------------------------


def cases(target: Target, dtype: str, one_row: bool = False):
    """The cases drawn for ``target``. In float32, emb_dim >= 4: over C <= 2 LayerNorm's output
    does not depend on its input, and every gradient below it is round-off, in any correct
    implementation (docs/conventions.md); float64 covers the small widths."""
    from hypothesis import strategies as st

    if target.name in ("GPTDatasetV1", "create_dataloader_v1"):  # B: batch size, T: max_length, D: stride
        return st.builds(
            Example, B=st.integers(1, 4), T=st.integers(1, 8), H=st.just(1), D=st.integers(1, 8), seed=st.just(0)
        )
    drawn = st.builds(
        Example, B=st.integers(1, 3), T=st.integers(1, 6), H=st.integers(1, 3), D=st.integers(1, 4),
        seed=st.integers(0, 2**16),
    )  # fmt: skip
    if one_row:
        drawn = drawn.map(lambda c: dataclasses.replace(c, B=1))
    return drawn.filter(lambda c: c.C >= 4) if dtype == "float32" else drawn


def smallest_failure(
    target: Target, obj: Any, dtype: str, subs, max_examples: int, one_row: bool = False
) -> Example | None:
    """The smallest case Hypothesis finds on which the reader's object fails, or None."""
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    quiet = settings(
        max_examples=max_examples, database=None, deadline=None, phases=[Phase.generate, Phase.shrink],
        derandomize=True, suppress_health_check=list(HealthCheck),  # the same report on every run
    )  # fmt: skip
    try:
        failing = lambda c: not attempt(target, obj, c, dtype, subs).ok  # noqa: E731
        return find(cases(target, dtype, one_row), failing, settings=quiet)
    except NoSuchExample:
        return None


def _worst(rows: list[Comparison]) -> str:
    bad = [r for r in rows if not r.ok]
    forward = [r for r in bad if not r.name.startswith("grad ")]
    # a wrong output is the headline: the gradients below it differ because it does
    row = max(forward or bad, key=lambda r: (np.isinf(r.max_abs), np.isnan(r.max_abs), r.max_rel))
    if np.isinf(row.max_abs):
        return f"{row.name}: shape or dtype differs from the reference's {row.shape}"
    if np.isnan(row.max_abs):
        return f"{row.name} has NaN or inf where the reference's is finite (or the other way round)"
    return f"{row.name} differs by {row.max_abs:.2e} (relative {row.max_rel:.1e}; tolerance {row.tol.describe()})"


def matching_mistakes(target: Target, case: Example, dtype: str, result: Attempt) -> list[Any]:
    """The catalogued mistakes whose reference reproduces the reader's forward outputs on ``case``
    and changes them (a mistake invisible on this case is not a candidate). None when the forward
    outputs are right and only gradients differ: the catalog's mistakes are forward ones. Where
    torch turns a mistake into an error, the error's text is matched instead."""
    bugs = [b for b in CATALOG.values() if b.component in target.bug_components]
    if result.error:
        return [b for b in bugs if b.symptom and b.symptom in result.error]
    if all(r.ok for r in result.rows if not r.name.startswith("grad ")):
        return []
    got, clean = result.got, _forward(result.ref)
    found = []
    for bug in bugs:
        with inject(bug.name):
            try:
                mutated = _forward(target.reference(case, np.dtype(dtype)))
            except Exception:
                continue
        if all(r.ok for r in compare_outputs(target, clean, mutated, dtype)):
            continue  # the mistake changes nothing on this case: it cannot be told apart here
        if all(r.ok for r in compare_outputs(target, got, mutated, dtype)):
            found.append(bug)
    return found


def diagnose(
    target: Target, obj: Any, case: Example, dtype: str, subs, result: Attempt, typical: Example = TYPICAL
) -> str:
    """One line naming the mistake, from the smallest failing case, or from the typical case when
    the smallest one cannot tell mistakes apart (at T = 2, one visible future token is no mask)."""
    for phrase, advice in KNOWN_ERRORS.items():
        if phrase in result.error:
            return advice
    found = matching_mistakes(target, case, dtype, result)
    seen_on = ""
    if len(found) != 1 and case != typical:
        wide = attempt(target, obj, typical, dtype, subs)
        wider = matching_mistakes(target, typical, dtype, wide) if not wide.ok else []
        if wider and (not found or len(wider) < len(found)):
            found, seen_on = wider, f"; seen on {typical}"
    if not found:
        return ""
    verb = "shows" if result.error else "matches the reference with"
    if len(found) == 1:
        bug = found[0]
        return f"your {target.name} {verb} {bug.what}; the book: {bug.fix} ({bug.name}){seen_on}"
    return f"your {target.name} {verb} any of: {', '.join(b.name for b in found)} (npgpt bugs){seen_on}"


def _forward(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in outputs.items() if not k.startswith("grad ")}


# what a PASS compared, by kind of name
COMPARED = {
    "GPTDatasetV1": "input and target windows match",
    "create_dataloader_v1": "batches (inputs, targets, batch sizes) match",
    "generate_text_simple": "generated tokens match",
    "generate": "greedy tokens and top-k sampling probabilities match",
    "train_model": f"learning rates and the parameters after {targets.TRAIN_STEPS} steps match (not the key biases)",
    "calc_loss_batch": "loss and gradients match",
    "calc_loss_loader": "losses match",
}
# listing 2.5 as printed encodes with tokenizer.encode(txt), which raises on "<|endoftext|>"; the
# book's repository (and section 2.5's own example) passes allowed_special
SPECIAL = "disallowed special token"
SPECIAL_NOTE = (
    "(checked on text without <|endoftext|>: on text with a document break your tokenizer call raises, as "
    'listing 2.5\'s tokenizer.encode(txt) does; pass allowed_special={"<|endoftext|>"} to encode such text, '
    "as the book's repository does)"
)
BOOK_CLIP_NOTE = (
    "(clips from the step after warmup, global_step > warmup_steps, as the printed appendix D does; the "
    "book's repository now clips from the first step after warmup, global_step >= warmup_steps, as npgpt does: "
    "checked against that printed rule)"
)
# errors of the reader's code whose cause is known, with the book's fix
KNOWN_ERRORS = {
    SPECIAL: "the text holds <|endoftext|> and your tokenizer call refuses it; encode with "
    'tokenizer.encode(txt, allowed_special={"<|endoftext|>"})',
}
# the book's own generate (listing 5.4): min_val = top_logits[:, -1] has shape (B,), which does not
# broadcast against logits (B, V) when B > 1; the book only ever calls it with one row
BOOK_TOP_K = "must match the size of tensor b"
BOOK_TOP_K_NOTE = (
    "(checked at batch size 1: with top_k and a batch of more than one row it raises, as the book's own "
    "generate does: min_val = top_logits[:, -1] has shape (B,), not (B, 1). The book only calls it with one "
    "row; for batches write min_val = top_logits[:, -1:] or top_logits[:, [-1]])"
)


def _missing_layer(target: Target, obj: Any, case: Example) -> str:
    """What the reader's MultiHeadAttention lacks when it has no out_proj (chapter 3's wrapper does
    without one; GPT-2's attention does not), or ""."""
    if target.name != "MultiHeadAttention":
        return ""
    try:
        names = [k.lower() for k, _ in target.build(obj, case).named_parameters()]
    except BaseException as exc:
        if not user_raised(exc):
            raise
        return ""  # the attempt reports it
    if any(k.startswith("out_proj.") for k in names):
        return ""
    return (
        "no out_proj: the book's MultiHeadAttention ends with self.out_proj = nn.Linear(d_out, d_out), "
        "GPT-2's projection of the heads"
    )


def check_target(
    target: Target, obj: Any, source: str, dtypes: Iterable[str], max_examples: int, example: Example | None
) -> Finding:
    subs = substitutions(target) if target.swaps else None
    dtypes = list(dtypes)
    notes: list[str] = []
    typical, one_row = example or TYPICAL, False
    drain_notes()  # none left from the name before
    missing = _missing_layer(target, obj, typical)
    if missing:
        target = targets.MHA_WITHOUT_OUT_PROJ  # the rest is still checked: a missing layer must not hide the mask
    probe = attempt(target, obj, typical, dtypes[0], subs)
    if target.kind != "module" and SPECIAL in probe.error:
        targets.DOCUMENT_BREAK = False  # the rest of this name's check runs on the story alone
        notes.append(SPECIAL_NOTE)
    if target.name == "train_model" and not probe.ok and not probe.error:
        printed = compare_outputs(
            target, probe.got, targets.ref_train_model(typical, np.dtype(dtypes[0]), True), dtypes[0]
        )
        if all(r.ok for r in printed):  # the printed listing: clipping from the step after warmup
            target = dataclasses.replace(target, reference=lambda c, d: targets.ref_train_model(c, d, True))
            notes.append(BOOK_CLIP_NOTE)
    if target.name == "generate" and BOOK_TOP_K in probe.error and typical.B > 1:
        one_row, typical = True, dataclasses.replace(typical, B=1)
        notes.append(BOOK_TOP_K_NOTE)
    for dtype in dtypes:
        first = attempt(target, obj, typical, dtype, subs)
        if first.construct_error:
            return Finding(target.name, "could not construct", first.construct_error, notes=notes)
        case = example if example is not None else smallest_failure(target, obj, dtype, subs, max_examples, one_row)
        if case is None or (example is not None and first.ok):
            continue
        result = attempt(target, obj, case, dtype, subs)
        if result.construct_error:
            return Finding(target.name, "could not construct", result.construct_error, case, dtype, notes=notes)
        detail = result.error or _worst(result.rows)
        command = f"npgpt check-book {source} --only {target.name} --example {case} --dtype {dtype}"
        if missing:
            detail = f"{missing}; with it as the identity, {detail}"
        finding = Finding(target.name, "FAIL", detail, case, dtype, command=command, rows=result.rows, notes=notes)
        finding.diagnosis = diagnose(target, obj, case, dtype, subs, result, typical)
        finding.notes += drain_notes()
        return finding
    compared = COMPARED.get(target.name, "outputs and gradients match")
    if missing:
        detail = f"{missing}; with it as the identity, the rest matches ({', '.join(dtypes)})"
        return Finding(target.name, "FAIL", detail, notes=notes + drain_notes())
    finding = Finding(target.name, "PASS", f"{', '.join(dtypes)}: {compared}", notes=notes + drain_notes())
    if "float64" in dtypes and target.tier != "exact":
        loose = attempt(target, obj, typical, "float64", subs, strict=True)
        if not loose.ok and not loose.error:
            finding.notes.append(
                f"(float64: within check-book's 1e-7 but not the reference's strict tier: {_worst(loose.rows)}; "
                "a constant built in float32, like the book's torch.tensor(2.0 / torch.pi), does this)"
            )
    if subs is not None:
        own = attempt(target, obj, typical, dtypes[0], None)
        swapped = [p if p != "global" else name for p, name in target.swaps]
        if not own.ok:
            finding.notes.append(
                f"(checked with the reference's {', '.join(swapped)}; with your own sub-modules it fails: "
                "see their lines)"
            )
        else:
            finding.notes.append(f"(also passes with your own {', '.join(swapped)})")
    drain_notes()
    return finding


def equalities(found: dict[str, Any], dtype: str = "float64") -> list[Finding]:
    """Chapter 3's claims: SelfAttention_v1 and _v2 agree after the book's weight transfer, and
    MultiHeadAttentionWrapper and MultiHeadAttention agree given equivalent weights."""
    import torch

    from parity.book import targets as t

    out = []
    case = TYPICAL
    if "SelfAttention_v1" in found and "SelfAttention_v2" in found:
        x = torch.from_numpy(t.single_sequence(case, np.dtype(dtype)))
        try:
            v1, v2 = (
                found["SelfAttention_v1"](case.C, case.D),
                found["SelfAttention_v2"](case.C, case.D, qkv_bias=False),
            )
            load_into(v1, t.self_attention_v1_weights(case), torch, torch.float64)
            load_into(v2, t.self_attention_v2_weights(case), torch, torch.float64)
            rows = [compare("v1 vs v2", v1(x).detach().numpy(), v2(x).detach().numpy(), tolerance(dtype, "fwd"))]
            out.append(
                _equality("SelfAttention_v1 == _v2", "after the book's weight transfer (v1 = v2.weight.T)", rows)
            )
        except BaseException as exc:
            if not user_raised(exc):
                raise
            out.append(Finding("SelfAttention_v1 == _v2", "FAIL", _raised(exc)))
    if "MultiHeadAttentionWrapper" in found and "MultiHeadAttention" in found:
        try:
            x = torch.from_numpy(draw_x(case, np.dtype(dtype)))
            wrapper = t.build_wrapper(found["MultiHeadAttentionWrapper"], case)
            weights = t.wrapper_weights(case)
            load_into(wrapper, weights, torch, torch.float64)
            mha = t.build_mha(found["MultiHeadAttention"], case)
            stacked = {
                f"{n}.{p}": np.concatenate([weights[f"heads.{h}.{n}.{p}"] for h in range(case.H)])
                for n in ("W_query", "W_key", "W_value") for p in ("weight", "bias")
            }  # fmt: skip
            stacked |= {"out_proj.weight": np.eye(case.C), "out_proj.bias": np.zeros(case.C)}
            load_into(mha, stacked, torch, torch.float64)
            wrapper.eval(), mha.eval()
            rows = [
                compare("wrapper vs MHA", wrapper(x).detach().numpy(), mha(x).detach().numpy(), tolerance(dtype, "fwd"))
            ]
            how = "with the heads' weights stacked and out_proj = I"
            out.append(_equality("MultiHeadAttentionWrapper == MultiHeadAttention", how, rows))
        except Exception as exc:
            out.append(Finding("MultiHeadAttentionWrapper == MHA", "FAIL", _raised(exc)))
    return out


def _equality(name: str, how: str, rows: list[Comparison]) -> Finding:
    if all(r.ok for r in rows):
        return Finding(name, "PASS", how)
    return Finding(name, "FAIL", f"{how}: {_worst(rows)}", rows=rows)


def check_book(
    path: str | Path,
    only: Iterable[str] | None = None,
    dtypes: Iterable[str] = ("float64", "float32"),
    max_examples: int = 30,
    example: Example | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Finding], Reader]:
    """(one finding per book name asked for, what loading the reader's code found and said)."""
    names = list(TARGETS) if not only else list(only)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise NpgptError(f"--only {', '.join(unknown)}: not a name check-book knows; it knows {', '.join(TARGETS)}")
    loaded = load_reader(path)
    found = loaded.found
    _HUNG.clear()
    findings = []
    dtypes = list(dtypes)
    targets.READER_MODEL = found.get("GPTModel")  # for the functions that need the reader's own model's methods
    try:
        for name in names:
            if name not in found:
                findings.append(Finding(name, "not found"))
                continue
            if progress:
                progress(f"checking {name}")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):  # the reader's prints would flood the report
                try:
                    finding = check_target(TARGETS[name], found[name], str(path), dtypes, max_examples, example)
                finally:
                    targets.DOCUMENT_BREAK = True
            if name in loaded.renamed:
                finding.notes.insert(0, f"(your {loaded.renamed[name]}, checked as the book's {name})")
            lines = printed.getvalue().splitlines()
            if finding.failed and lines:
                finding.notes.append(f"(your code printed {len(lines)} lines; the first: {cut(lines[0])})")
            findings.append(finding)
        findings += equalities({n: found[n] for n in names if n in found})  # chapter 3's, among the names asked for
    finally:
        targets.READER_MODEL = None
    return findings, loaded
