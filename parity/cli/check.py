"""``npgpt check``: the report users run to see that npgpt and torchgpt agree (the main job)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Mapping

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.validate import check_values
from parity import user_code
from parity.bugs import CATALOG
from parity.cli.reports import check_report_path, print_report, write_json
from parity.cli.runs import DefaultsHelp, Runner, examples
from parity.engine import RandomWeights, Spill, draw_ids, run_check
from parity.report import Report


def _return_freed_memory_to_the_system() -> None:
    """glibc serves blocks below its mmap threshold from its heap, and that threshold grows to
    32 MB after the first large free: GPT-2's 5-19 MB tensors then stay resident after they are
    freed, and the second implementation's run starts on top of the first's (2.1 GB measured).
    A fixed threshold of 256 KiB maps every tensor-sized block, which free() returns at once. Other C
    libraries: nothing to do."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 18)  # -3: M_MMAP_THRESHOLD


def _torch_huge_pages() -> None:
    """NumPy asks the kernel for transparent huge pages on its large arrays; torch's CPU allocator
    does so only when THP_MEM_ALLOC_ENABLE is set before its first allocation. Without it, every
    fresh gradient and AdamW moment of GPT-2 small is faulted in 4 KB pages (~7 s of the default
    check on the 2-core dev machine, the same peak memory). A user's own setting wins."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Runner]:
    p = sub.add_parser(
        "check",
        formatter_class=DefaultsHelp,
        help="load the same weights into npgpt and torchgpt and compare every tensor (the main job)",
        description="Compare npgpt against torchgpt: every block output, logits, loss, all gradients, and "
        "loss/params/AdamW moments over k steps with dropout on (shared masks). Exits 1 if anything fails.",
        epilog=examples(
            "npgpt check --config tiny                          # seconds; the default GPT-2 small takes minutes",
            "npgpt check --weights models/124M --dtype both     # OpenAI's weights, float64 and float32",
            "npgpt check --impl my_gpt.py:GPTModel --config tiny   # your own nn.Module against npgpt",
        ),
    )
    p.add_argument(
        "--impl",
        default="torchgpt",
        help="the implementation under test: torchgpt, hf, hf-sdpa, path/file.py:Name or package.module:Name "
        "(docs/adapters.md); NumPy is the reference",
    )
    p.add_argument("--weights", help="a weights file or OpenAI checkpoint directory (default: random weights)")
    p.add_argument("--config", default="gpt2-small", help="shape of the random weights")
    p.add_argument(
        "--vocab-size", type=int, default=None, help="vocabulary of the random weights (default: the config's)"
    )
    p.add_argument("--dtype", choices=["float64", "float32", "both"], default="float64", help="precision of both sides")
    p.add_argument("--steps", type=int, default=10, help="AdamW steps to compare")
    p.add_argument("--batch-size", type=int, default=2, help="sequences per compared batch")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (at most the context length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device of the torch reference: cpu or cuda")
    p.add_argument("--json", help="also write every row to this JSON file")
    p.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds one call into the implementation under test may take (0: no limit)",
    )
    p.add_argument("--quiet", action="store_true", help="one line per component instead of one per tensor")
    p.add_argument(
        "--inject-bug",
        metavar="NAME",
        choices=list(CATALOG),
        help="teaching: check npgpt with this classic mistake (npgpt bugs lists them) against the clean npgpt, "
        "and see where the report points",
    )
    p.add_argument(
        "--attention",
        choices=["plain", "blocked"],
        default="plain",
        help="npgpt's attention: the book's (plain) or the block-skipping one (npgpt/layers/blocked_attention.py, "
        "16-row blocks so the inputs span several), checked against the same reference as the plain one",
    )
    p.add_argument(
        "--gelu",
        choices=["tanh", "erf"],
        default="tanh",
        help="the reference's GELU: GPT-2's tanh approximation, or the exact erf form, to check the rest of a model "
        "built with nn.GELU() (nanoGPT)",
    )
    return {"check": run}


# the catalog entries that can live where a report first diverges, by the sub-module in the row's name
SUSPECTS = {
    "norm": ("LayerNorm",),
    "att": ("MultiHeadAttention",),
    "ff": ("GELU",),
    "block": ("TransformerBlock", "LayerNorm", "MultiHeadAttention", "GELU"),
    "model": ("GPTModel", "LayerNorm"),
}


def suspects(row_name: str) -> list[str]:
    """Catalog entries that could make ``row_name`` the first diverging tensor."""
    parts = row_name.split()[0].split(".")
    where = (
        parts[2] if len(parts) > 2 and parts[0] == "trf_blocks" else "block" if parts[0] == "trf_blocks" else "model"
    )
    where = "norm" if where.startswith("norm") else where
    return [b.name for b in CATALOG.values() if b.component in SUSPECTS.get(where, SUSPECTS["model"])]


def diagnose(spec: str, device: str, tied: bool, first: str, seed: int, reference_bug: str | None) -> str:
    """The catalog entry whose mistake, applied to the reference, makes the implementation's forward
    outputs (every block, the logits) pass on the tiny config in float64: one line, or "" when none
    does. Seconds, not minutes."""
    from parity.adapters import BuggedImpl
    from parity.implementations import resolve

    cfg = GPTConfig.preset("tiny", qkv_bias=True)
    rng = np.random.default_rng(seed)
    ids, targets = (draw_ids(rng, cfg.vocab_size, (2, 16)) for _ in range(2))
    for name in suspects(first):
        if name == reference_bug:
            continue
        impl = resolve(spec, device)
        with contextlib.redirect_stdout(io.StringIO()):  # the implementation's own prints
            bugs = (name,) if reference_bug is None else (reference_bug, name)  # --gelu erf stays on
            report = run_check(
                cfg, RandomWeights(cfg, seed), ids, targets, "float64", 0, impl=impl, reference=BuggedImpl(bugs, tied)
            )
        forward = [r for r in report.rows if r.name.startswith("trf_blocks") or r.name == "logits"]
        if report.error is None and forward and all(r.ok for r in forward):  # the catalog's mistakes are forward ones
            bug = CATALOG[name]
            extra = "; to check the rest of the model as it is, add --gelu erf" if name == "exact-gelu" else ""
            return f"diagnosis: {spec} matches the reference with {bug.what} ({bug.name}); GPT-2: {bug.fix}{extra}"
    return ""


class TimeLeft:
    """An estimate of the time left, from the engine's progress lines: within a side, the steps so
    far give the rate of the rest; while the reference runs, the implementation under test is
    assumed to take as long as the reference will (its setup, then its steps)."""

    STEP = re.compile(r": step (\d+)/(\d+)$")

    def __init__(self, t0: float) -> None:
        self.side_start, self.step1, self.second_side = t0, t0, False

    def after(self, msg: str) -> str:
        now = time.perf_counter()
        if msg.endswith(": running and comparing"):  # the reference is done: the other side starts
            self.side_start, self.second_side = now, True
        match = self.STEP.search(msg)
        if not match:
            return ""
        k, n = int(match[1]), int(match[2])
        if k == 1:
            self.step1 = now
            return ""
        per_step = (now - self.step1) / (k - 1)
        rest = per_step * (n - k)
        if not self.second_side:
            rest += (self.step1 - self.side_start) + per_step * (n - 1)  # the other side, alike
        return f" (~{rest:.0f} s left)"


def _sites_off(target, cfg: GPTConfig) -> str:
    """'; off at att.dropout on both sides' when the implementation cannot take masks at a site."""
    from npgpt.layers.gpt_model import dropout_sites

    if cfg.drop_rate == 0 or not hasattr(target, "replayed_sites"):
        return ""
    replayed = target.replayed_sites(cfg)
    off = sorted({s.split(".", 2)[-1] for s in dropout_sites(cfg) if s not in replayed})
    return f"; off at {', '.join(off)} on both sides" if off else ""


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


def run(args: argparse.Namespace) -> int:
    check_values(vars(args))
    if not args.timeout >= 0:
        raise NpgptError(f"--timeout {args.timeout}: give seconds, 0 or more (0: no limit)")
    user_code.TIMEOUT[0] = args.timeout
    if args.inject_bug and args.impl != "torchgpt":
        raise NpgptError(f"--inject-bug checks npgpt with the mistake against npgpt; drop --impl {args.impl}")
    if args.inject_bug and args.gelu == "erf":
        raise NpgptError("--gelu erf changes the reference; --inject-bug checks npgpt against itself: use one")
    _return_freed_memory_to_the_system()
    _torch_huge_pages()
    if args.json:  # found unwritable before the comparison, not after it
        check_report_path(args.json)
    try:
        from parity.adapters import BuggedImpl, NumpyImpl
        from parity.implementations import resolve
        from torchgpt.device import pick_device
    except ImportError as exc:
        if exc.name == "torch":
            raise NpgptError("npgpt check needs PyTorch for the reference; pip install 'npgpt[torch]'") from None
        raise
    device = pick_device(args.device)
    if args.weights:
        if args.vocab_size is not None:
            raise NpgptError(f"--vocab-size shapes random weights; {args.weights} has its own, drop --vocab-size")
        from parity.weights import check_finite, load_weights

        cfg, params = load_weights(args.weights)
        check_finite(
            params, f"--weights {args.weights}", "weights to check must be finite: NaN on both sides would pass"
        )
        source = f"weights {args.weights}"
    else:
        vocab = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
        cfg = GPTConfig.preset(args.config, qkv_bias=True, **vocab)  # OpenAI's GPT-2 has biases on q, k, v
        params = None  # made tensor by tensor, each time an implementation loads them
        source = f"random weights, seed {args.seed}"
    if args.seq_len > cfg.context_length:
        raise NpgptError(f"--seq-len {args.seq_len} exceeds context_length={cfg.context_length}")
    target = BuggedImpl(args.inject_bug) if args.inject_bug else resolve(args.impl, str(device))
    probe = getattr(target, "probe", None)
    if probe is not None:
        probe(cfg)  # builds the module once: its layout, a tied head, its dropout sites
    rng = np.random.default_rng(args.seed)
    ids = draw_ids(rng, cfg.vocab_size, (args.batch_size, args.seq_len))  # with repeated ids
    targets = draw_ids(rng, cfg.vocab_size, (args.batch_size, args.seq_len))
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    print(
        f"npgpt vs {target.name} ({device}): {cfg.n_layers} layers, emb {cfg.emb_dim}, {cfg.n_heads} heads, "
        f"vocab {cfg.vocab_size}; {source}; B={args.batch_size}, T={args.seq_len}; {args.steps} AdamW steps "
        f"with dropout {cfg.drop_rate} (shared masks{_sites_off(target, cfg)})"
        + ("; the reference's GELU is the exact erf form (--gelu erf), not GPT-2's" if args.gelu == "erf" else "")
        + (f"; npgpt's attention: blocked, {NumpyImpl.BLOCKED_ROWS}-row blocks" if args.attention == "blocked" else "")
    )
    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="npgpt-weights-") as tmp:
        if params is None:
            weights: Mapping[str, np.ndarray] = RandomWeights(cfg, args.seed)
        else:
            weights = spilled = Spill(tmp)  # a file's weights wait on disk, not as a third copy in memory
            for key in list(params):
                spilled.put(key, params.pop(key))
        for dtype in dtypes:
            t0 = time.perf_counter()
            left = TimeLeft(t0)

            def progress(msg: str, dtype: str = dtype, t0: float = t0, left: TimeLeft = left) -> None:
                elapsed = time.perf_counter() - t0
                print(
                    f"  [{dtype} {elapsed:5.1f} s, peak {_peak_gb():.1f} GB] {msg}{left.after(msg)}",
                    file=sys.stderr,
                    flush=True,
                )

            tied = getattr(target, "tied", False)
            reference = (
                BuggedImpl("exact-gelu", tied, args.attention)
                if args.gelu == "erf"
                else NumpyImpl(tied=tied, attention=args.attention)
            )
            report = run_check(
                cfg, weights, ids, targets, dtype, args.steps, args.seed, progress=progress, impl=target,
                reference=reference,
            )  # fmt: skip
            reports.append(report)
            print_report(report, dtype, time.perf_counter() - t0, args.quiet)
    print(f"peak memory (resident): {_peak_gb():.1f} GB")
    if args.json:
        write_json(args.json, cfg.to_dict(), target.name, source, reports)
    if args.inject_bug:
        bug = CATALOG[args.inject_bug]
        found = "the check caught it" if not all(r.ok for r in reports) else "the check did NOT catch it"
        print(f"injected {bug.name} ({bug.component}): {bug.what}; {found}. The fix: {bug.fix}")
    errors = [r.error for r in reports if r.error]
    failed = next((r for r in reports if not r.ok and not r.error), None)
    if failed is not None and not args.inject_bug:
        print(f"  looking for a classic mistake that explains {failed.first_failure.name} ...", file=sys.stderr)
        found = diagnose(
            args.impl, str(device), getattr(target, "tied", False), failed.first_failure.name, args.seed,
            "exact-gelu" if args.gelu == "erf" else None,
        )  # fmt: skip
        if found:
            print(found)
    if errors:
        print(f"{errors[0]} (exit 3: the implementation under test crashed; its rows up to there are above)")
        return 3
    return 0 if all(r.ok for r in reports) else 1
