"""The comparison engine: the same weights and inputs through two implementations, compared
tensor by tensor — every block's residual output, the logits, the loss, every gradient, and
the loss, parameters and AdamW moments after each of k steps (dropout on, shared masks)."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.layers.softmax import softmax
from parity.adapters import TIED, Implementation, draw_masks
from parity.outputs import (
    FILTERS,
    GENERATED,
    STATE,
    SUBMODULES,
    WINDOWS,
    Output,
    declared,
    generated_logits,
    kind_of,
    missing,
    state_key,
    state_name,
)
from parity.report import Report
from parity.tolerances import ZERO_GRADIENT, Comparison, tolerance
from parity.tolerances import compare as compare_arrays
from parity.user_code import time_limit, user_raised

# The W_key bias has an exactly zero gradient (adding a constant to every key shifts a row of
# scores by q.b, which softmax ignores). In float32 each implementation's round-off "gradient"
# (~1e-9) is comparable to AdamW's eps, so AdamW moves that bias in a round-off-determined
# direction: after k steps it is not comparable between ANY two implementations. Its gradient is
# still compared (and is ~0 in both); only its float32 post-step state is left out, and said so.
BOOK_TIER = tolerance("float64", "book")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Appendix D's loop for the k compared steps: linear warmup from ``initial_lr`` to ``peak_lr``,
    cosine decay to ``min_lr`` at the last step, and global-norm clipping at ``max_norm`` (1.0,
    the book's value, clips every step of a randomly initialised GPT-2). Each side computes the
    learning rate and clips with its own code; the report compares both, step by step."""

    peak_lr: float = 4e-4
    warmup_steps: int = 2
    initial_lr: float = 4e-5
    min_lr: float = 4e-6
    max_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class Run:
    """One check's inputs, the same for the reference's recording and the comparison."""

    cfg: GPTConfig
    params: Mapping[str, np.ndarray]
    ids: np.ndarray
    targets: np.ndarray
    dtype: np.dtype
    steps: int
    seed: int
    lr: float
    weight_decay: float
    replayed: set[str] | None  # the dropout sites the implementation under test takes masks at
    window: int | None  # the generation rows' context (sliding_window), None: the model's

    def batches(self) -> Iterator[tuple]:
        return steps_of(self.cfg, self.ids, self.targets, self.steps, self.seed, self.replayed)


@dataclasses.dataclass
class Progress:
    """The progress lines a check prints (``say``) and the call the implementation under test is
    in (``doing``), which names it when that call raises."""

    say: Callable[[str], None]
    doing: str = "loading the weights"


class RandomWeights(Mapping[str, np.ndarray]):
    """Every tensor randomised from the seed (weights, biases, LayerNorm scale and shift), made
    when it is asked for: each key has its own stream, ``default_rng((seed, index))``, so a
    tensor is the same whichever order the keys are read in, and nothing is held. Uniform draws
    with the variance of ``N(0, scale^2)`` (a uniform draw costs a ninth of a normal one)."""

    def __init__(self, cfg: GPTConfig, seed: int) -> None:
        from npgpt.params import param_shapes

        self.cfg, self.seed = cfg, seed
        self.shapes = param_shapes(cfg)
        self.index = {key: i for i, key in enumerate(self.shapes)}

    def __getitem__(self, key: str) -> np.ndarray:
        shape = self.shapes[key]
        rng = np.random.default_rng((self.seed, self.index[key]))
        x = rng.random(shape)  # U[0, 1): mean 1/2, variance 1/12
        x -= 0.5
        if key.endswith(".scale"):
            spread, centre = 0.2, 1.0
        elif key.endswith((".shift", ".bias")):
            spread, centre = 0.1, 0.0
        else:
            fan_in = shape[-1] if len(shape) == 2 else self.cfg.emb_dim
            spread, centre = 1.0 if key.endswith("emb.weight") else 1.0 / np.sqrt(fan_in), 0.0
        x *= spread * np.sqrt(12.0)  # standard deviation ``spread``
        x += centre
        return x

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def random_params(cfg: GPTConfig, seed: int, dtype: np.dtype = np.float64) -> dict[str, np.ndarray]:
    """``RandomWeights`` made all at once, in ``dtype``."""
    return {k: v.astype(dtype, copy=False) for k, v in RandomWeights(cfg, seed).items()}


class Spill(Mapping[str, np.ndarray]):
    """Arrays kept on disk (one .npy each, in a temp directory) and read back one at a time, so
    a run holds one implementation's tensors in memory, not two."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.paths: dict[str, Path] = {}

    def put(self, name: str, array: np.ndarray) -> None:
        path = self.root / f"{len(self.paths)}.npy"
        try:
            np.save(path, np.asarray(array), allow_pickle=False)
        except OSError as exc:
            if exc.errno is not None:
                raise
            # NumPy's own short-write error ("Not enough free space to write ..."), without an errno:
            # a full disk, told as one (bad input, exit 2), not as a bug
            raise OSError(
                errno.ENOSPC, "No space left on device for the check's spill of one side's tensors "
                "(about six times the weights; TMPDIR=<dir> puts it on another disk)", str(self.root),
            ) from exc  # fmt: skip
        self.paths[name] = path

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self.paths[name], allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _release(im: Implementation) -> None:
    """Free what ``load`` allocated, when the implementation can (``release`` is optional)."""
    release = getattr(im, "release", None)
    if release is not None:
        release()


def run_check(
    cfg: GPTConfig,
    params: Mapping[str, np.ndarray],
    ids: np.ndarray,
    targets: np.ndarray,
    dtype: str | np.dtype,
    steps: int = 10,
    seed: int = 0,
    lr: float = 4e-4,
    weight_decay: float = 0.1,
    progress: Callable[[str], None] | None = None,
    schedule: Schedule | None = Schedule(),
    *,
    impl: Implementation,
    reference: Implementation,
) -> Report:
    """Compare ``impl`` (the implementation under test) against ``reference`` and return the rows.
    Both are keyword-only, so a call always says which side is which: every row compares the
    tested tensor (a) with the reference's (b), the reference's magnitude sets the tolerance
    (parity/tolerances.py), and ``npgpt check`` makes npgpt the reference.

    The two run one after the other: ``ref`` first, every tensor it produces written to a temp
    directory; it is released; then ``impl`` runs the same sequence and each of its tensors is
    compared with the reference's as it is produced. Peak memory is one implementation's
    parameters, gradients and AdamW moments, not two (the temp directory holds about six times
    the weights' size until the comparison ends)."""
    say = progress or (lambda msg: None)
    ref = reference
    probe = getattr(impl, "probe", None)
    if probe is not None:
        probe(cfg)  # what the reference must know first: a tied head, the dropout sites it takes
    if getattr(impl, "tied", False) != getattr(ref, "tied", False):
        raise ValueError(f"{impl.name} ties its output head to the token embedding: the reference must tie too")
    replayed = impl.replayed_sites(cfg) if hasattr(impl, "replayed_sites") else None
    notes = []
    window = sliding_window(impl, prompt_of(ids)) if hasattr(impl, "generate_greedy") else None
    if hasattr(impl, "generate_greedy") and window is None:
        notes.append(
            f"the generation rows' window did not slide: {impl.name}'s generate_greedy takes no context_size "
            "(docs/adapters.md)"
        )
    if schedule is not None and not all(hasattr(im, "set_schedule") for im in (impl, ref)):
        schedule = None
        notes.append(f"{impl.name} has no set_schedule: the steps ran at a constant lr without clipping")
    for im in (impl, ref) if schedule is not None else ():
        im.set_schedule(dataclasses.replace(schedule, peak_lr=lr), steps)
    with tempfile.TemporaryDirectory(prefix="npgpt-check-") as tmp:
        store = Spill(tmp)
        say(f"{ref.name}: running the reference")
        run = Run(cfg, params, ids, targets, np.dtype(dtype), steps, seed, lr, weight_decay, replayed, window)
        _record(ref, store, run, Progress(say))
        _release(ref)
        say(f"{impl.name}: running and comparing")
        rows: list[Comparison] = []
        tracker = Progress(say)  # .doing: what the implementation under test was asked to do last
        try:
            report = _compare(impl, store, run, tracker, rows)
        except NpgptError:
            raise  # bad input (unmatched keys ...): one line, exit 2
        except BaseException as exc:  # a crash of the implementation under test is a finding, not a traceback
            if not user_raised(exc):
                raise  # a real Ctrl-C
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            error = f"{impl.name} raised {type(exc).__name__} while {tracker.doing}: {first}"
            rows.append(Comparison(error, (), math.inf, math.inf, tolerance(dtype, "model"), False))
            report = Report(np.dtype(dtype).name, rows, error=error)
        _release(impl)
    if report.error is None:
        _require_declared(report, impl, ref, cfg, params, dtype, steps, scheduled=schedule is not None)
    if getattr(impl, "tied", False):
        report.notes.append(
            f"{impl.name} ties out_head to tok_emb (one tensor): its gradient, parameter and AdamW moments are "
            "compared under tok_emb.weight against the reference tied the same way (the two gradients summed)"
        )
    if not hasattr(impl, "generate_greedy"):
        notes.append(f"no generation or sampling-filter rows: {impl.name} has no generate_greedy (docs/adapters.md)")
    if not hasattr(impl, "data_batches"):
        notes.append(f"no data-pipeline rows: {impl.name} has no data_batches (docs/adapters.md)")
    report.notes.extend(dict.fromkeys([*notes, *getattr(impl, "notes", [])]))  # each once, in order
    if schedule is not None and steps and report.error is None:
        clipped = sum(report.step_norms[s] > schedule.max_norm for s in report.step_norms)
        report.notes.append(
            f"appendix D's schedule over the {steps} steps (warmup {schedule.warmup_steps}, lr "
            f"{schedule.initial_lr:g} -> {lr:g} -> {schedule.min_lr:g}) and clipping at {schedule.max_norm:g}: "
            f"the clip acted at {clipped} of {steps} steps"
        )
    return report


def _require_declared(report, impl, ref, cfg, params, dtype, steps: int, scheduled: bool) -> None:
    """A failing row when the report lacks any row the run declared (parity/outputs.py)."""
    both = lambda hook: hasattr(impl, hook) and hasattr(ref, hook)  # noqa: E731
    keys = [k for k in params if not (getattr(impl, "tied", False) and k == TIED)]
    state_tol = tolerance(dtype, "state")
    skipped = [k for k in keys if k.endswith(ZERO_GRADIENT)] if state_tol.norm else []
    names = declared(
        cfg, keys, steps, data=both("data_batches"), generation=both("generate_greedy"), scheduled=scheduled,
        skipped_state=skipped,
    )  # fmt: skip
    lacking = missing(names, (r.name for r in report.rows))
    if lacking:
        name = f"{len(lacking)} declared outputs not compared (first: {lacking[0]})"
        report.rows.append(Comparison(name, (), math.inf, math.inf, tolerance(dtype, "model"), False))


def draw_ids(rng: np.random.Generator, vocab_size: int, shape: tuple[int, ...]) -> np.ndarray:
    """Token ids in which some ids always repeat (a quarter of the positions take one of four
    ids): the embedding's gradient must sum repeated rows, and a random batch over GPT-2's
    vocabulary would rarely test that."""
    ids = rng.integers(0, vocab_size, shape)
    few = rng.integers(0, vocab_size, 4)
    pick = rng.random(shape) < 0.25
    ids[pick] = few[rng.integers(0, 4, int(pick.sum()))]
    if ids.size > 1:
        ids.flat[-1] = ids.flat[0]  # at least one repeat, whatever the draw
    return ids


def data_rows(im: Implementation) -> list[tuple]:
    """(name, tensor): every batch of the implementation's own loader over the embedded text,
    in order (shuffle off), concatenated, with the batch sizes (a wrong drop_last shows there)."""
    from npgpt.data import embedded_text

    rows = []
    for batch_size, max_length, stride, drop_last in WINDOWS:
        batches = im.data_batches(embedded_text(), batch_size, max_length, stride, drop_last)
        label = f"data T={max_length} stride {stride} batch {batch_size}{' drop_last' if drop_last else ''}"
        for j, what in enumerate(("inputs", "targets")):
            parts = [np.asarray(batch[j], dtype=np.int64).reshape(-1, max_length) for batch in batches]
            rows.append((f"{label}: {what}", np.concatenate(parts) if parts else np.zeros((0, max_length), np.int64)))
        rows.append((f"{label}: batch sizes", np.array([len(batch[0]) for batch in batches], dtype=np.int64)))
    return rows


def prompt_of(ids: np.ndarray) -> np.ndarray:
    """The generation rows' prompt: the first half of the check's input ids (at least one)."""
    return ids[:, : max(1, ids.shape[1] // 2)]


def generation_rows(
    im: Implementation, prompt: np.ndarray, logits: np.ndarray, use_cache: bool = True, context_size: int | None = None
) -> list[tuple]:
    """(name, tensor): a greedy continuation of ``prompt`` with the KV cache (each step's
    next-token logits, then the tokens), and the sampling filters applied to the same
    last-position ``logits``, compared as kept-token masks and probabilities (no draws).
    The filters always see float64 logits: which token crosses top-p's threshold is decided by
    the last bits of a float32 cumulative sum, a tie between two correct implementations.
    ``context_size`` (when given) is the generation's window: shorter than prompt + tokens, the
    window slides and the cache is cropped and refilled (``sliding_window``)."""
    window = {} if context_size is None else {"context_size": context_size}
    tokens, steps = im.generate_greedy(prompt, GENERATED, use_cache=use_cache, **window)
    cache = "KV cache" if use_cache else "no cache, reference"
    rows = [(f"generate step {j + 1} logits ({cache})", step) for j, step in enumerate(steps)]
    rows.append((f"generate tokens ({cache})", np.asarray(tokens, dtype=np.int64)))  # integers stay integers
    if not use_cache:
        return rows
    for temperature, top_k, top_p in FILTERS:
        top_k = None if top_k is None else min(top_k, logits.shape[-1])  # a tiny vocabulary has fewer
        kept = im.filter_logits(logits, temperature, top_k, top_p)
        label = f"filter temperature {temperature}, top-k {top_k}, top-p {top_p}"
        rows.append((f"{label}: kept tokens", np.isfinite(kept).astype(np.uint8)))
        rows.append((f"{label}: probabilities", softmax(kept)))
    return rows


def sliding_window(impl: Implementation, prompt: np.ndarray) -> int | None:
    """The generation rows' window, one token longer than the prompt, so that of the GENERATED
    steps the second appends to a full cache and the rest slide it (crop, refill); None when the
    implementation's ``generate_greedy`` takes no ``context_size`` (then the window is the
    model's context and never slides, and the report says so)."""
    try:
        accepted = inspect.signature(impl.generate_greedy).parameters
    except (TypeError, ValueError):
        return None
    takes = "context_size" in accepted or any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    return prompt.shape[1] + 1 if takes else None


def steps_of(
    cfg: GPTConfig, ids: np.ndarray, targets: np.ndarray, steps: int, seed: int, replayed: set[str] | None
) -> Iterator[tuple]:
    """The k training batches and dropout masks: a fresh batch every step (one batch repeated would
    be memorised and drive the loss towards 0, where relative error is moot), drawn from ``seed``
    so that both runs see the same ones. Sites outside ``replayed`` (those the implementation
    under test cannot take masks at) map to None: no dropout there, on both sides."""
    rng = np.random.default_rng(seed)
    for step in range(steps):
        step_ids = draw_ids(rng, cfg.vocab_size, ids.shape) if step else ids
        step_targets = draw_ids(rng, cfg.vocab_size, ids.shape) if step else targets
        masks = draw_masks(cfg, *ids.shape, rng) if cfg.drop_rate > 0 else None
        if masks is not None and replayed is not None:
            masks = {site: m if site in replayed else None for site, m in masks.items()}  # None: off
        yield step_ids, step_targets, masks


def _block_rows(impl: Implementation, blocks: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(name, tensor) in forward order: each block's sub-layer outputs (when the implementation
    reports them, ``taps()``), then the block's output."""
    taps = impl.taps() if hasattr(impl, "taps") else []
    rows = []
    for i, block in enumerate(blocks):
        sub = taps[i] if i < len(taps) else {}
        rows += [(f"trf_blocks.{i}.{name} output", sub[name]) for name in SUBMODULES if name in sub]
        rows.append((f"trf_blocks.{i} output", block))
    return rows


def outputs_of(
    im: Implementation,
    run: Run,
    progress: Progress,
    *,
    filter_logits: np.ndarray | None = None,
    uncached: bool = False,
    every_step: bool = False,
) -> Iterator[Output]:
    """Everything a check compares, as typed ``Output`` (name, tensor; its kind and component come
    from the name) in the order it is made: the one walk that
    the reference's recording, the comparison and golden bundles all consume (names and kinds:
    parity/outputs.py). Data rows (``data_batches``), each block's sub-layer outputs (``taps``)
    and output, the logits, generation with the KV cache and the sampling filters
    (``generate_greedy``; the filters see ``filter_logits``, default the implementation's own
    last-position logits), ``uncached``: also the generation without the cache (the reference's
    own check of its cache); the eval loss and every gradient; then per step the loss (and lr,
    gradient norm when scheduled), and the parameters and AdamW moments after the last step
    (``every_step``: after every step). ``progress.doing`` names the call in progress. Tensors
    are yielded one at a time and not held, so memory holds one implementation's state."""
    if hasattr(im, "data_batches"):
        progress.doing = "batching the embedded text with its data loader"
        yield from (Output(*row) for row in data_rows(im))
    progress.doing = "loading the weights"
    im.load(run.cfg, run.params, run.dtype)
    progress.doing = "running the eval forward"
    logits, blocks = im.forward(run.ids)  # eval mode: every block's residual output, then the logits
    yield from (Output(*row) for row in _block_rows(im, blocks))
    yield Output("logits", logits)
    last = logits[:, -1, :].astype(np.float64) if filter_logits is None else filter_logits
    del logits, blocks
    if hasattr(im, "generate_greedy"):
        progress.doing = "generating with its KV cache"
        prompt = prompt_of(run.ids)
        yield from (Output(*row) for row in generation_rows(im, prompt, last, True, run.window))
        if uncached:
            yield from (Output(*row) for row in generation_rows(im, prompt, last, False, run.window))
    progress.doing = "computing the eval loss and gradients"
    loss, grads = im.loss_and_grads(run.ids, run.targets, None)  # eval mode
    yield Output("loss", np.float64(loss))
    for key in grads:
        yield Output(f"grad {key}", grads[key])
    del grads  # (a loop variable here would keep the last gradient, 0.3 GB, alive through the steps)
    progress.doing = "creating the optimizer"
    im.init_optimizer(run.lr, run.weight_decay, (0.9, 0.999), 1e-8)
    for step, (step_ids, step_targets, masks) in enumerate(run.batches(), start=1):
        progress.doing = f"computing step {step}'s loss and gradients (train mode, dropout masks)"
        loss = im.loss_and_grads(step_ids, step_targets, masks)[0]  # the grads are not held
        progress.doing = f"taking optimizer step {step}"
        info = im.optimizer_step()
        yield Output(f"step {step} loss", np.float64(loss))
        if info is not None:  # scheduled: (lr, gradient norm before clipping)
            yield Output(f"step {step} lr", np.float64(info[0]))
            yield Output(f"step {step} grad norm", np.float64(info[1]))
        progress.say(f"{im.name}: step {step}/{run.steps}")
        if every_step or step == run.steps:
            progress.doing = "reading the parameters and AdamW moments"
            groups = list(im.state())
            for i, what in enumerate(STATE[: len(groups)]):  # a missing group: the declared rows say so
                tensors, groups[i] = groups[i], None  # one group held at a time (a converting adapter copies)
                for key in tensors:
                    yield Output(state_name(what, key, step), tensors[key])
                del tensors


def _record(ref: Implementation, store: Spill, run: Run, progress: Progress) -> None:
    for name, tensor in outputs_of(ref, run, progress, uncached=True):
        store.put(name, tensor)
        del tensor  # not held while the next one is made (a converting adapter's copy, 0.3 GB for tok_emb)


class _Limited:
    """The implementation under test with each call under the time limit (``--timeout``): a call
    that hangs becomes a crash row naming it, not a silent run."""

    CALLS = ("load", "forward", "generate_greedy", "filter_logits", "data_batches", "loss_and_grads")
    CALLS += ("init_optimizer", "optimizer_step", "state")

    def __init__(self, impl: Implementation) -> None:
        self._impl = impl

    def __getattr__(self, name: str):
        value = getattr(self._impl, name)
        if name not in self.CALLS or not callable(value):
            return value

        def call(*args, **kwargs):
            with time_limit(f"{self._impl.name}.{name}"):
                return value(*args, **kwargs)

        return call


def _compare(impl: Implementation, store: Spill, run: Run, progress: Progress, rows: list[Comparison]) -> Report:
    """``rows`` fills as tensors are compared; ``progress.doing`` names the call in progress (for the
    report when the implementation raises). A row only the implementation under test makes (a
    sub-layer output the reference does not report) is not compared; one it does not make is
    caught by the declared rows (``run_check``)."""
    dt = run.dtype
    impl = _Limited(impl)
    # a user's module in float64 is also held to check-book's tier (1e-7) where it misses the strict
    # one: the book's GELU builds sqrt(2/pi) in float32; the report says which rows needed it
    lenient = dt == np.float64 and getattr(impl, "user_code", False)

    def compare(name: str, actual, expected) -> Comparison:
        tol = tolerance(dt, kind_of(name))  # the row's kind, from its name (parity/outputs.py)
        row = compare_arrays(name, actual, expected, tol)
        if row.ok or not lenient or tol.rtol == 0 or tol.rtol >= BOOK_TIER.rtol:
            return row
        loose = compare_arrays(name, actual, expected, BOOK_TIER)
        return loose if loose.ok else row

    # the float32 W_key biases' state after the steps is left out by rule (tolerances.ZERO_GRADIENT)
    skip_state = tolerance(dt, "state").norm
    skipped: set[str] = set()
    step_norms: dict[int, float] = {}
    reference_last = store["logits"][:, -1, :].astype(np.float64)  # both sides filter the same logits
    for name, tensor in outputs_of(impl, run, progress, filter_logits=reference_last):
        key = state_key(name)
        if skip_state and key is not None and key.endswith(ZERO_GRADIENT):
            skipped.add(key)
            continue
        if name in store.paths:
            rows.append(compare(name, tensor, store[name]))
        if name.endswith(" grad norm") and name in store.paths:
            step_norms[int(name.split()[1])] = float(store[name])
        del tensor  # not held while the next one is made (a converting adapter's copy, 0.3 GB for tok_emb)
        if name == "generate tokens (KV cache)":  # the reference's own cache against its uncached loop
            for j in range(1, GENERATED + 1):
                cached, uncached = generated_logits(j), generated_logits(j, cached=False)
                if uncached in store.paths:
                    rows.append(compare(f"reference: {cached} vs no cache", store[cached], store[uncached]))
    notes = []
    if skipped:
        notes.append(
            f"not compared after the steps in {dt.name}: {len(skipped)} W_key bias tensors (their true gradient "
            "is 0, so AdamW follows round-off; their gradients are compared above)"
        )
    book = [r for r in rows if r.tol == BOOK_TIER]
    if book and all(r.ok for r in rows):  # on a FAIL it would explain nothing
        worst = max(book, key=lambda r: r.max_rel)
        notes.append(
            f"float64: {len(book)} tensors within check-book's {BOOK_TIER.rtol:.0e} but not the strict "
            f"{tolerance(dt, 'model').rtol:.0e} (largest: {worst.name}, relative {worst.max_rel:.1e}); a constant "
            "built in float32, like the book's torch.tensor(2.0 / torch.pi) in GELU, does this"
        )
    return Report(dt.name, rows, notes, step_norms)
