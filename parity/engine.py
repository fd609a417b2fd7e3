"""The comparison engine: the same weights and inputs through two implementations, compared
tensor by tensor — every block's residual output, the logits, the loss, every gradient, and
the loss, parameters and AdamW moments after each of k steps (dropout on, shared masks)."""

from __future__ import annotations

import dataclasses

import numpy as np

from npgpt.config import GPTConfig
from parity.adapters import Implementation, draw_masks
from parity.tolerances import Comparison, compare, tolerance

# The W_key bias has an exactly zero gradient (adding a constant to every key shifts a row of
# scores by q.b, which softmax ignores). In float32 each implementation's round-off "gradient"
# (~1e-9) is comparable to AdamW's eps, so AdamW moves that bias in a round-off-determined
# direction: after k steps it is not comparable between ANY two implementations. Its gradient is
# still compared (and is ~0 in both); only its float32 post-step state is left out, and said so.
ZERO_GRADIENT = ("att.W_key.bias",)


@dataclasses.dataclass
class Report:
    dtype: str
    rows: list[Comparison]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def first_failure(self) -> Comparison | None:
        return next((r for r in self.rows if not r.ok), None)

    def worst(self) -> dict[str, tuple[float, float]]:
        """Largest (max abs, rel to max|ref|) error per kind of tensor: the measured drift.

        The W_key biases are left out: their true gradient is 0, so their relative error is
        round-off over round-off."""
        kinds = ("trf_blocks", "logits", "loss", "grad", "step", "param", "adam m", "adam v")
        out: dict[str, tuple[float, float]] = {}
        for row in self.rows:
            if any(z in row.name for z in ZERO_GRADIENT):
                continue
            kind = next(k for k in kinds if row.name.startswith(k))
            a, r = out.get(kind, (0.0, 0.0))
            out[kind] = (max(a, row.max_abs), max(r, row.max_rel))
        return out

    def table(self) -> str:
        head = f"{'tensor':<44} {'shape':>12} {'max abs':>10} {'rel/max|ref|':>10}  {'tolerance':<16} pass"
        return "\n".join([head, "-" * len(head)] + [r.row() for r in self.rows] + self.notes)


def random_params(cfg: GPTConfig, seed: int, dtype: np.dtype = np.float64) -> dict[str, np.ndarray]:
    """Every tensor randomised from the seed: weights, biases, LayerNorm scale and shift."""
    from npgpt.params import param_shapes

    rng = np.random.default_rng(seed)
    params = {}
    for key, shape in param_shapes(cfg).items():
        fan_in = shape[-1] if len(shape) == 2 else cfg.emb_dim
        scale = 1.0 if key.endswith(("emb.weight",)) else 1.0 / np.sqrt(fan_in)
        x = rng.standard_normal(shape) * scale
        if key.endswith(".scale"):
            x = 1.0 + 0.2 * rng.standard_normal(shape)
        elif key.endswith((".shift", ".bias")):
            x = 0.1 * rng.standard_normal(shape)
        params[key] = x.astype(dtype)
    return params


def run_check(
    impl: Implementation,
    ref: Implementation,
    cfg: GPTConfig,
    params: dict[str, np.ndarray],
    ids: np.ndarray,
    targets: np.ndarray,
    dtype: str | np.dtype,
    steps: int = 10,
    seed: int = 0,
    lr: float = 4e-4,
    weight_decay: float = 0.1,
) -> Report:
    """Compare ``impl`` against ``ref`` (the reference, torch by default) and return the rows."""
    dt = np.dtype(dtype)
    rows: list[Comparison] = []
    for im in (impl, ref):
        im.load(cfg, params, dt)

    # forward, eval mode: every block's residual output, then the logits
    (logits_a, blocks_a), (logits_b, blocks_b) = impl.forward(ids), ref.forward(ids)
    tol = tolerance(dt, "model")
    for i, (a, b) in enumerate(zip(blocks_a, blocks_b, strict=True)):
        rows.append(compare(f"trf_blocks.{i} output", a, b, tol))
    rows.append(compare("logits", logits_a, logits_b, tol))

    # loss and all gradients, eval mode
    (loss_a, grads_a), (loss_b, grads_b) = (
        impl.loss_and_grads(ids, targets, None),
        ref.loss_and_grads(ids, targets, None),
    )
    rows.append(compare("loss", np.float64(loss_a), np.float64(loss_b), tolerance(dt, "loss")))
    for key in grads_b:
        rows.append(compare(f"grad {key}", grads_a[key], grads_b[key], tol))

    # k AdamW steps in train mode, dropout on with shared masks, a fresh batch every step (one
    # batch repeated would be memorised and drive the loss towards 0, where relative error is moot)
    rng = np.random.default_rng(seed)
    for im in (impl, ref):
        im.init_optimizer(lr, weight_decay, (0.9, 0.999), 1e-8)
    for step in range(steps):
        step_ids = rng.integers(0, cfg.vocab_size, ids.shape) if step else ids
        step_targets = rng.integers(0, cfg.vocab_size, ids.shape) if step else targets
        masks = draw_masks(cfg, *ids.shape, rng) if cfg.drop_rate > 0 else None
        loss_a, _ = impl.loss_and_grads(step_ids, step_targets, masks)
        loss_b, _ = ref.loss_and_grads(step_ids, step_targets, masks)
        impl.optimizer_step()
        ref.optimizer_step()
        rows.append(
            compare(f"step {step + 1} loss", np.float64(loss_a), np.float64(loss_b), tolerance(dt, "step_loss"))
        )
    notes = []
    if steps:
        st = tolerance(dt, "state")
        skipped = [k for k in params if k.endswith(ZERO_GRADIENT)] if st.norm else []
        for what, a, b in zip(("param", "adam m", "adam v"), impl.state(), ref.state(), strict=True):
            for key in b:
                if key not in skipped:
                    rows.append(compare(f"{what} {key} @ step {steps}", a[key], b[key], st))
        if skipped:
            notes.append(
                f"not compared after the steps in {dt.name}: {len(skipped)} W_key bias tensors (their true gradient "
                "is 0, so AdamW follows round-off; their gradients are compared above)"
            )
    return Report(dt.name, rows, notes)
