"""Loading a user's code (check-book's files, check --impl's file.py:Name): its definitions only.

A chapter file or notebook usually trains, downloads or plots at module level. npgpt runs
only what defines things: imports, ``class`` and ``def`` statements, plain constants (a config
dict), and ``try``/``if`` blocks made of those. Everything else at the top level (a call, a loop,
``if __name__ == "__main__":``) is skipped and listed. The same rule applies to the reader's own
modules that the file imports (a sibling ``previous_chapters.py``, a package beside it), which
are found on the file's folder and its package root, as when the reader runs the file; they are
forgotten after each file, so two folders' ``previous_chapters`` never collide.

A notebook is its code cells in order under the same rule; IPython magics (``%matplotlib``,
``!pip``) are dropped and a ``%%`` cell is skipped whole.

Each top-level statement runs on its own: one that raises (a missing package) is reported and
the rest still load.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

# calls allowed in a kept assignment: building a constant, the tokenizer or a device (none of them
# trains, downloads or writes; tiktoken's gpt2 encoding is served offline by check-book)
INERT_CALLS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "range", "len", "Path"}
    | {"pathlib.Path", "torch.device", "tiktoken.get_encoding", "tiktoken.encoding_for_model"}
    | {"torch.cuda.is_available", "torch.backends.mps.is_available"}  # the book's device line
)
# what a path given to sys.path.append/insert may call (``os.path.abspath("../ch04")``,
# ``Path(__file__).resolve().parent``): the last part of the called name
PATH_CALLS = frozenset({"Path", "str", "abspath", "join", "dirname", "realpath", "normpath", "expanduser"})
PATH_CALLS |= {"getcwd", "cwd", "resolve", "absolute"}
# calls kept as statements: settings a model's code depends on (jax's float64 switch, torch's
# default dtype), and updating a constant (GPT_CONFIG.update({...}))
SETTING_CALLS = frozenset(
    {"jax.config.update", "config.update", "torch.set_default_dtype", "torch.set_float32_matmul_precision"}
    | {"warnings.filterwarnings", "warnings.simplefilter"}
)


class CallTimeoutError(Exception):
    """The user's code ran past its time limit (``--timeout``): reported as that call's failure."""


_ARMED = [False]  # a time_limit is running: the outermost one holds the timer
TIMEOUT = [120.0]  # seconds one call into the user's code may take (0: no limit); set by --timeout


@contextlib.contextmanager
def time_limit(what: str, seconds: float | None = None) -> Iterator[None]:
    """Raise CallTimeoutError inside the block after ``seconds`` (default TIMEOUT[0]): a loop in the
    user's code becomes a FAIL that says what was running, not a silent hang. Main thread only
    (SIGALRM); elsewhere, and with 0, no limit."""
    import signal
    import threading

    limit = TIMEOUT[0] if seconds is None else seconds
    if not limit or _ARMED[0] or threading.current_thread() is not threading.main_thread():
        yield  # no limit, or one already runs (an inner timer would cancel the outer one's on exit)
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise CallTimeoutError(f"{what} took longer than {limit:g} s (--timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    _ARMED[0] = True
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _ARMED[0] = False


_INTERRUPTED = [False]  # a real Ctrl-C arrived (set by the handler watch_interrupts installs)


def watch_interrupts() -> None:
    """Tell a real Ctrl-C from a KeyboardInterrupt the user's code raises itself: the SIGINT
    handler marks it, then interrupts as Python's default does."""
    import signal

    def on_sigint(signum: int, frame: object) -> None:
        _INTERRUPTED[0] = True
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave the default
        signal.signal(signal.SIGINT, on_sigint)


def user_raised(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside the user's code, is that code's failure to report: any
    Exception, and also SystemExit (``sys.exit()``, ``exit()``), GeneratorExit and a
    KeyboardInterrupt that no Ctrl-C sent. A checker must never let them end the run as a verdict."""
    if isinstance(exc, KeyboardInterrupt):
        return not _INTERRUPTED[0]
    return isinstance(exc, Exception | SystemExit | GeneratorExit)


@dataclasses.dataclass
class Loaded:
    """What loading one file gave: its module, the statements not run, the statements that raised."""

    path: Path
    module: types.ModuleType | None
    skipped: list[str] = dataclasses.field(default_factory=list)  # "line 12: model = GPTModel(cfg)"
    errors: list[str] = dataclasses.field(default_factory=list)  # "line 3: No module named 'tensorflow' ..."

    def summary(self) -> str:
        """One line for the report: what was not run."""
        if not self.skipped:
            return ""
        shown = "; ".join(self.skipped[:3]) + ("; ..." if len(self.skipped) > 3 else "")
        return (
            f"{self.path}: ran its imports, definitions and constants; {len(self.skipped)} other top-level "
            f"statement{'s' if len(self.skipped) != 1 else ''} not run ({shown})"
        )


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _inert(node: ast.AST | None) -> bool:
    """An expression that builds a value without running the reader's code or anything slow."""
    if node is None:
        return True
    for sub in ast.walk(node):
        if isinstance(sub, ast.Await | ast.Yield | ast.YieldFrom):
            return False
        if isinstance(sub, ast.Call) and _dotted(sub.func) not in INERT_CALLS:
            return False
    return True


def _is_setting(stmt: ast.stmt) -> bool:
    """A call kept at the top level: a setting (SETTING_CALLS) or ``X.update(...)`` of a constant,
    with arguments that are themselves inert."""
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if not isinstance(call, ast.Call):
        return False
    name = _dotted(call.func)
    known = name in SETTING_CALLS or (name.endswith(".update") and "." not in name.removesuffix(".update"))
    return known and all(_inert(a) for a in [*call.args, *(k.value for k in call.keywords)])


def _extends_sys_path(stmt: ast.stmt) -> bool:
    """``sys.path.append(p)``, ``.insert(0, p)`` or ``.extend([p])`` with a path built from paths:
    how readers import one chapter's code from another's folder."""
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if not (
        isinstance(call, ast.Call) and _dotted(call.func) in ("sys.path.append", "sys.path.insert", "sys.path.extend")
    ):
        return False
    inner = [sub for arg in call.args for sub in ast.walk(arg) if isinstance(sub, ast.Call)]
    return all(_dotted(sub.func).rsplit(".", 1)[-1] in PATH_CALLS for sub in inner)


def _is_main_guard(test: ast.expr) -> bool:
    return isinstance(test, ast.Compare) and any(
        isinstance(side, ast.Name) and side.id == "__name__" for side in (test.left, *test.comparators)
    )


def _kept(stmts: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of a block that define things (see the module docstring), recursively."""
    out: list[ast.stmt] = []
    for stmt in stmts:
        if isinstance(stmt, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.append(stmt)
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            out.append(stmt)  # a docstring
        elif _is_setting(stmt):
            out.append(stmt)
        elif _extends_sys_path(stmt):
            out.append(stmt)  # the folders its imports come from (put back after loading)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign) and _inert(stmt.value):
            out.append(stmt)
        elif isinstance(stmt, ast.If) and not _is_main_guard(stmt.test) and _inert(stmt.test):
            body, orelse = _kept(stmt.body), _kept(stmt.orelse)
            if body or orelse:
                out.append(ast.If(stmt.test, body or [ast.Pass()], orelse))
        elif isinstance(stmt, ast.Try):
            body = _kept(stmt.body)
            if body:
                handlers = [ast.ExceptHandler(h.type, h.name, _kept(h.body) or [ast.Pass()]) for h in stmt.handlers]
                out.append(ast.Try(body, handlers, _kept(stmt.orelse), _kept(stmt.finalbody)))
    for stmt in out:
        ast.fix_missing_locations(stmt)
    return out


def cut(text: str, width: int = 160) -> str:
    """``text`` on one line, at most ``width`` characters, cut at a word boundary."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + " ..."


def _snippet(source: str, stmt: ast.stmt, width: int = 60) -> str:
    return cut(ast.get_source_segment(source, stmt) or type(stmt).__name__, width)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        return f"needs the module {top!r}, not installed here (pip install {top}, or put your {top}.py beside it)"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}"


def run_definitions(source: str, filename: str, namespace: dict, where: str = "") -> tuple[list[str], list[str]]:
    """Run the defining statements of ``source`` in ``namespace``, one at a time.

    Returns (skipped, errors), one entry per statement: ``where`` prefixes its line number (a
    notebook's cell). A SyntaxError of the whole source is raised to the caller."""
    tree = ast.parse(source, filename)
    futures = {a.name for s in tree.body if isinstance(s, ast.ImportFrom) and s.module == "__future__" for a in s.names}
    # each statement is compiled alone: the file's future import must be passed on to every one
    flags = importlib.import_module("__future__").annotations.compiler_flag if "annotations" in futures else 0
    kept = _kept(tree.body)
    kept_lines = {s.lineno for s in kept}
    skipped = [f"{where}line {s.lineno}: {_snippet(source, s)}" for s in tree.body if s.lineno not in kept_lines]
    errors = []
    for stmt in kept:
        code = compile(ast.Module([stmt], []), filename, "exec", flags=flags, dont_inherit=True)
        try:
            with time_limit(f"{where}line {stmt.lineno}"):
                exec(code, namespace)
        except BaseException as exc:  # the reader's statement: reported, the rest still loads
            if not user_raised(exc):
                raise
            if isinstance(stmt, ast.Assign | ast.AnnAssign | ast.If | ast.Try) or (
                isinstance(stmt, ast.Expr) and isinstance(exc, NameError)
            ):
                # a value computed from one not run (x_2 = inputs[1]): not run either, not a failure
                skipped.append(f"{where}line {stmt.lineno}: {_snippet(source, stmt)} (uses what was not run)")
            else:
                errors.append(f"{where}line {stmt.lineno}: {_reason(exc)}")
    return skipped, errors


def notebook_cells(path: Path) -> list[tuple[int, str]]:
    """(cell number from 1, Python source) of a notebook's code cells, magics and shell lines blanked
    (so line numbers hold), ``%%`` cells left out."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SyntaxError(f"not a readable notebook ({type(exc).__name__})") from None
    out = []
    for n, cell in enumerate(cells, 1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if source.lstrip().startswith("%%"):
            continue
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
        out.append((n, "\n".join(lines) + "\n"))
    return out


class _DefinitionsLoader(importlib.abc.Loader):
    """Loads one of the reader's own modules definitions-only, logging into ``log``."""

    def __init__(self, path: str, log: Loaded) -> None:
        self.path, self.log = path, log

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        source = Path(self.path).read_text(encoding="utf-8")
        skipped, errors = run_definitions(source, self.path, module.__dict__, where=f"{Path(self.path).name} ")
        self.log.skipped += skipped
        self.log.errors += errors


class _ReaderFinder(importlib.abc.MetaPathFinder):
    """Finds the reader's own modules (top-level names in ``local``, under ``root``) before
    anything installed, and loads them with ``_DefinitionsLoader``."""

    def __init__(self, root: Path, local: set[str], log: Loaded) -> None:
        self.roots, self.local, self.log = [str(root)], local, log
        self.path_before = list(sys.path)

    def _learn_added_folders(self) -> None:
        """Folders the reader's code put on sys.path are the reader's too (not site-packages)."""
        for entry in sys.path:
            if entry in self.path_before or entry in self.roots or "-packages" in entry:
                continue
            folder = Path(entry or ".").resolve()
            if folder.is_dir():
                self.roots.append(entry)
                self.local |= _modules_in(folder)

    def find_spec(self, fullname, path=None, target=None):
        self._learn_added_folders()
        if fullname.split(".")[0] not in self.local:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, list(path) if path else self.roots)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        spec.loader = _DefinitionsLoader(spec.origin, self.log)
        return spec


def package_root(file: Path) -> Path:
    """The folder to import from: above the topmost package (folder with __init__.py) holding ``file``."""
    folder = file.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def _own_modules(file: Path) -> tuple[Path, set[str]]:
    """(the folder the reader's imports resolve from, the top-level names that are the reader's own):
    in a package, the package alone (its root may be site-packages, whose other packages are not
    the reader's); otherwise the .py files and packages beside the file."""
    root = package_root(file)
    if root != file.parent:
        return root, {file.relative_to(root).parts[0]}
    return root, _modules_in(root)


def _modules_in(folder: Path) -> set[str]:
    """The top-level module names a folder provides: its .py files and packages."""
    return {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}


@contextlib.contextmanager
def _reader_imports(root: Path, local: set[str], log: Loaded) -> Iterator[None]:
    """The reader's own modules importable by name (definitions only) while the block runs, any
    module of the same name loaded before set aside, and all of them forgotten after."""
    aside = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in local}
    finder = _ReaderFinder(root, set(local), log)
    sys.meta_path.insert(0, finder)
    path, cwd = list(sys.path), os.getcwd()
    os.chdir(root)  # relative folders in the reader's sys.path lines mean what they mean when it runs there
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k.split(".")[0] in finder.local]:
            del sys.modules[k]
        sys.modules.update(aside)


def load_file(path: Path) -> Loaded:
    """A .py file or .ipynb notebook, definitions only (see the module docstring). A file that is
    not Python at all raises SyntaxError."""
    given, path = Path(path), Path(path).resolve()
    root, local = _own_modules(path)
    name = f"npgpt_book_{path.stem}_{abs(hash(str(path)))}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    log = Loaded(given, module)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    stdout = io.StringIO()
    with _reader_imports(root, local, log), contextlib.redirect_stdout(stdout):
        if path.suffix == ".py" and root != path.parent:  # inside a package: its relative imports work
            parts = path.relative_to(root).with_suffix("").parts
            log.module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            del sys.modules[name]
        elif path.suffix == ".ipynb":
            for n, source in notebook_cells(path):
                try:
                    skipped, errors = run_definitions(source, f"{path} (cell {n})", module.__dict__, f"cell {n} ")
                except SyntaxError as exc:
                    log.skipped.append(f"cell {n}: not plain Python ({exc.msg} at line {exc.lineno})")
                    continue
                log.skipped += skipped
                log.errors += errors
        else:
            skipped, errors = run_definitions(path.read_text(encoding="utf-8"), str(path), module.__dict__)
            log.skipped += skipped
            log.errors += errors
    return log
