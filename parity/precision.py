"""Fast paths judged against float64: how far each torch speed-up (SDPA, TF32, bf16 autocast,
torch.compile) lands from the float64 NumPy reference, next to how far the book's eager path
lands at the same precision.

The criterion is FlashAttention's: a fast kernel is not expected to match a slow one bit for
bit, only to be no less accurate than the straightforward code *at the same precision*. With
``err(x) = ||x - x_f64|| / ||x_f64||`` (float64 reference from npgpt on the CPU), a variant
passes when, for the logits, all gradients as one vector and the worst single gradient tensor,

    err(fast variant) <= MULTIPLE * max(err(book eager, same precision), 2^-24)

The loss is reported but not judged: a scalar mean can land on the reference by luck in the
baseline (its error is a sum of signed round-offs), so a ratio of two scalar errors is noise;
FlashAttention's tests judge tensors for the same reason. Comparing a bf16 variant with the
*fp32* book path instead would ask bf16 for 2^16 times more accuracy than it has; that gap is
reported (``vs_fp32``), but it is the cost of the precision, not a defect of the kernel. Eval
mode (no dropout): a fast path's own dropout RNG cannot be replayed, and dropout is the same
mask multiply in every variant.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from npgpt.config import GPTConfig
from parity.tolerances import ZERO_GRADIENT

FLOOR = 2.0**-24  # float32's unit round-off: below it a baseline error says nothing
# What the FlashAttention authors allow (2x the baseline's error); docs/conventions.md records
# the ratios measured on an H100 that this multiple was checked against.
MULTIPLE = 2.0
METRICS = ("logits", "loss", "grads", "grad_worst")  # reported
JUDGED = ("logits", "grads", "grad_worst")


@dataclasses.dataclass(frozen=True)
class Variant:
    precision: str  # "fp32" (TF32 off), "tf32" (TF32 matmuls), "bf16" (autocast)
    attention: str = "book"  # "book" | "sdpa"
    compiled: bool = False

    @property
    def name(self) -> str:
        return f"{self.precision} {self.attention}{' compiled' if self.compiled else ''}"

    @property
    def baseline(self) -> Variant:
        return Variant(self.precision)


VARIANTS = [
    Variant("fp32"),
    Variant("fp32", "sdpa"),
    Variant("fp32", "book", True),
    Variant("fp32", "sdpa", True),
    Variant("tf32"),
    Variant("tf32", "sdpa"),
    Variant("bf16"),
    Variant("bf16", "sdpa"),
    Variant("bf16", "sdpa", True),
]


@dataclasses.dataclass
class Outputs:
    logits: np.ndarray  # (B, T, V) float64
    loss: float
    grads: dict[str, np.ndarray]  # float64, keyed like the state_dict


def reference(cfg: GPTConfig, params: dict[str, np.ndarray], ids: np.ndarray, targets: np.ndarray) -> Outputs:
    """npgpt in float64, eval mode: logits, loss and every gradient."""
    from npgpt.model import GPTModel

    model = GPTModel(cfg, params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()}).eval()
    logits = model(ids)
    loss, grads = model.loss_and_grads(ids, targets)
    return Outputs(logits, loss, grads)


def run_variant(
    variant: Variant, cfg: GPTConfig, params: dict[str, np.ndarray], ids: np.ndarray, targets: np.ndarray, device: str
) -> Outputs:
    """The book's torch model in float32 weights with this variant's settings, eval mode."""
    import torch

    from parity.convert import to_torch
    from torchgpt.fast import enable_tf32
    from torchgpt.model import set_attention

    enable_tf32(variant.precision == "tf32")
    try:
        model = set_attention(to_torch(cfg, params, dtype=torch.float32), variant.attention).to(device).eval()
        if variant.compiled:
            torch._dynamo.reset()  # a fresh graph per variant: no guard from an earlier model decides
        run = torch.compile(model) if variant.compiled else model
        ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
        targets_t = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=variant.precision == "bf16"):
            logits = run(ids_t)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets_t.flatten())
        loss.backward()
        grads = {k: p.grad.detach().double().cpu().numpy() for k, p in model.named_parameters()}
        return Outputs(logits.detach().double().cpu().numpy(), float(loss.item()), grads)
    finally:
        enable_tf32(False)


def _rel(a: np.ndarray | float, b: np.ndarray | float) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), np.finfo(np.float64).tiny))


def errors(out: Outputs, ref: Outputs) -> dict[str, float]:
    """Norm-relative errors against the reference: logits, loss, all gradients as one vector, and
    the worst single gradient tensor (the W_key biases left out: their true gradient is 0)."""
    keys = [k for k in ref.grads if not k.endswith(ZERO_GRADIENT)]
    flat_a = np.concatenate([out.grads[k].ravel() for k in keys])
    flat_b = np.concatenate([ref.grads[k].ravel() for k in keys])
    return {
        "logits": _rel(out.logits, ref.logits),
        "loss": _rel(out.loss, ref.loss),
        "grads": _rel(flat_a, flat_b),
        "grad_worst": max(_rel(out.grads[k], ref.grads[k]) for k in keys),
    }


def measure(
    cfg: GPTConfig,
    params: dict[str, np.ndarray],
    ids: np.ndarray,
    targets: np.ndarray,
    device: str,
    variants: list[Variant] | None = None,
) -> list[dict[str, Any]]:
    """One row per variant: its errors, the baseline's (book eager, same precision), the ratio
    between them, the fp32 book path's errors, and whether the variant passes the criterion.
    Baselines are always measured, first, whether or not they are listed."""
    variants = VARIANTS if variants is None else variants
    ref = reference(cfg, params, ids, targets)
    wanted = list(dict.fromkeys([Variant("fp32")] + [v.baseline for v in variants] + list(variants)))
    errs = {v: errors(run_variant(v, cfg, params, ids, targets, device), ref) for v in wanted}
    rows = []
    for v in dict.fromkeys(variants):
        base, fp32 = errs[v.baseline], errs[Variant("fp32")]
        allowed = {m: MULTIPLE * max(base[m], FLOOR) for m in JUDGED}
        rows.append(
            {
                "variant": v.name,
                "precision": v.precision,
                "attention": v.attention,
                "compiled": v.compiled,
                "errors": errs[v],
                "baseline": base,
                "ratio": {m: errs[v][m] / max(base[m], FLOOR) for m in METRICS},
                "vs_fp32": {m: errs[v][m] / max(fp32[m], FLOOR) for m in METRICS},
                "allowed": allowed,
                "ok": all(errs[v][m] <= allowed[m] for m in JUDGED),
            }
        )
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | logits err | loss err | grads err | worst grad tensor | ratio to book, same precision "
        "(logits/loss/grads/worst) | ratio to book fp32 (logits/grads) | judged: within "
        f"{MULTIPLE:g}× |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        e, q, f = r["errors"], r["ratio"], r["vs_fp32"]
        lines.append(
            f"| {r['variant']} | {e['logits']:.2e} | {e['loss']:.2e} | {e['grads']:.2e} | {e['grad_worst']:.2e} | "
            + "/".join(f"{q[m]:.2f}" for m in METRICS)
            + f" | {f['logits']:.0f}/{f['grads']:.0f} | {'yes' if r['ok'] else 'NO'} |"
        )
    return head + "\n".join(lines) + "\n"
