"""The adapter protocol: what the comparison engine needs from an implementation, so that any
third implementation can be checked against the same reference (see docs/adapters.md).

Arrays cross the boundary as NumPy arrays keyed by the project's state_dict vocabulary.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import numpy as np

from npgpt import generation
from npgpt.config import GPTConfig
from npgpt.layers.dropout import draw_mask
from npgpt.layers.gpt_model import EMB_DROP, dropout_sites
from npgpt.model import GPTModel as NpModel
from npgpt.optim import AdamW as NpAdamW
from npgpt.optim import clip_coef, grad_norm
from npgpt.schedule import lr_at
from parity.bugs import inject
from parity.torch_module import TorchModuleImpl

# the module (npgpt/__init__ exports the function generate, which shadows it as an attribute)

TIED = "out_head.weight"  # tied to tok_emb.weight in a model whose head is its embedding


class Implementation(Protocol):
    """One GPT-2 implementation under comparison."""

    name: str

    def load(self, cfg: GPTConfig, params: dict[str, np.ndarray], dtype: np.dtype) -> None:
        """Take these weights (copies), in this dtype; reset any optimizer."""

    def forward(self, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Eval mode: (logits (B, T, V), [residual stream after each block (B, T, C)])."""

    def loss_and_grads(
        self, ids: np.ndarray, targets: np.ndarray, masks: dict[str, np.ndarray] | None
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy and every parameter's gradient. ``masks`` None: eval mode (no
        dropout); otherwise train mode with these boolean keep masks (keys: npgpt's dropout sites)."""

    def init_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float], eps: float) -> None:
        """AdamW with torch.optim.AdamW semantics over all parameters."""

    def optimizer_step(self) -> tuple[float, float] | None:
        """Apply AdamW to the gradients of the last ``loss_and_grads``. After ``set_schedule``
        (optional): use the schedule's lr for this step, clip the gradients' global norm, and
        return (lr, the norm before clipping)."""

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(params, AdamW first moments m, second moments v)."""


class OptionalHooks(Protocol):
    """What an implementation MAY also have; the engine looks each up by name (``hasattr``) and,
    when present, compares more or compares differently. docs/adapters.md says what each adds;
    tests/parity/test_adapters.py holds the engine's lookups and the built-in adapters to this list."""

    tied: bool  # the output head is the token embedding (one tensor, gradients summed)
    notes: list[str]  # printed under the report
    user_code: bool  # a reader's module: float64 rows may also pass check-book's tier, and say so

    def taps(self) -> list[dict[str, np.ndarray]]:
        """Each block's sub-layer outputs of the last ``forward``: {"norm1", "att", "norm2", "ff"}."""

    def generate_greedy(
        self, prompt: np.ndarray, n: int, use_cache: bool = True, context_size: int | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Greedy continuation over the last ``context_size`` tokens: ids (B, T + n) and each
        step's next-token logits (B, V)."""

    def filter_logits(
        self, logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
    ) -> np.ndarray:
        """Temperature, top-k and top-p applied to logits (B, V); filtered-out tokens -inf."""

    def data_batches(
        self, text: str, batch_size: int, max_length: int, stride: int, drop_last: bool
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every (inputs, targets) batch of the implementation's own loader over ``text``, in order."""

    def set_schedule(self, schedule: Any, total_steps: int) -> None:
        """From now on, ``optimizer_step`` follows appendix D's schedule and clipping."""

    def probe(self, cfg: GPTConfig) -> None:
        """Build once before the reference runs: its layout, a tied head, its dropout sites."""

    def replayed_sites(self, cfg: GPTConfig) -> set[str]:
        """The dropout sites that take the shared masks (the rest run with dropout off, both sides)."""

    def release(self) -> None:
        """Free what ``load`` allocated: two GPT-2-sized implementations are never held at once."""


def draw_masks(cfg: GPTConfig, B: int, T: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One keep mask per dropout site, with the site's shape; both implementations consume them."""
    residual, attention = (B, T, cfg.emb_dim), (B, cfg.n_heads, T, T)
    return {
        site: draw_mask(rng, residual if site == EMB_DROP or "drop_shortcut" in site else attention, cfg.drop_rate)
        for site in dropout_sites(cfg)
    }


class NumpyImpl:
    """npgpt: the hand-written NumPy forward/backward.

    ``tied=True`` (to check a model whose output head IS its token embedding, like Hugging
    Face's): out_head.weight is the same array as tok_emb.weight, so one AdamW state updates
    both, and their two gradients are reported summed under tok_emb.weight."""

    name = "npgpt"
    # ``attention="blocked"`` (npgpt check --attention blocked) runs npgpt's block-skipping attention with
    # BLOCKED_ROWS-row blocks, so that the check's 64-token inputs span several blocks and skip some
    BLOCKED_ROWS = 16

    def __init__(self, tied: bool = False, attention: str = "plain") -> None:
        self.tied, self.attention = tied, attention
        if attention != "plain":
            self.name = f"npgpt ({attention} attention)"

    def load(self, cfg: GPTConfig, params: dict[str, np.ndarray], dtype: np.dtype) -> None:
        own = {k: np.array(v, dtype=dtype) for k, v in params.items() if not (self.tied and k == TIED)}
        if self.tied:
            own[TIED] = own["tok_emb.weight"]  # one array, two uses
        # no reuse_grad_buffers here: the buffers it keeps between calls (~0.15 GB at the default check) would
        # take the main job's peak to 6.0 GB, for no time measurably saved (issue 19's note)
        block = self.BLOCKED_ROWS if self.attention == "blocked" else None
        self.model = NpModel(cfg, params=own, attention=self.attention, attention_block=block)
        self.optimizer: NpAdamW | None = None
        self.grads: dict[str, np.ndarray] = {}
        self.taps_: list[dict[str, np.ndarray]] = []

    def forward(self, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        self.model.eval()
        self.taps_ = []
        logits, cache = self.model.forward(ids, taps=self.taps_)
        return logits, list(cache.block_outputs)

    def taps(self) -> list[dict[str, np.ndarray]]:
        """Each block's sub-layer outputs (norm1, att, norm2, ff) from the last ``forward``."""
        return self.taps_

    def generate_greedy(self, prompt: np.ndarray, n: int, use_cache: bool = True, context_size: int | None = None):
        """npgpt.generation's greedy loop: (token ids (B, T + n), [next-token logits (B, V) per step]);
        the window is the last ``context_size`` tokens (default: the model's context length)."""
        seen: list[np.ndarray] = []
        context = context_size or self.model.cfg.context_length
        ids = generation.generate(self.model, prompt, n, context, use_cache=use_cache, on_logits=seen.append)
        return ids, seen

    def filter_logits(self, logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None):
        return generation.filter_logits(logits, temperature, top_k, top_p)

    def data_batches(self, text: str, batch_size: int, max_length: int, stride: int, drop_last: bool):
        """npgpt.data's windows and loader, in order: [(inputs (B, T), targets (B, T)), ...]."""
        from npgpt.data import DataLoader, GPTDatasetV1
        from npgpt.tokenizer import get_tokenizer

        dataset = GPTDatasetV1(text, get_tokenizer(), max_length, stride)
        return list(DataLoader(dataset, batch_size, shuffle=False, drop_last=drop_last))

    def loss_and_grads(self, ids, targets, masks):
        self.model.train(masks is not None)
        self.grads = {}  # the last call's gradients go before this call's are made
        loss, grads = self.model.loss_and_grads(ids, targets, masks=masks)
        if self.tied:
            grads["tok_emb.weight"] = grads["tok_emb.weight"] + grads.pop(TIED)
        self.grads = grads
        return loss, self.grads

    def init_optimizer(self, lr, weight_decay, betas, eps):
        trained = {k: v for k, v in self.model.params.items() if not (self.tied and k == TIED)}
        self.optimizer = NpAdamW(trained, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def set_schedule(self, schedule, total_steps: int) -> None:
        """Appendix D's loop from now on: npgpt.schedule's learning rate, npgpt.optim's clipping."""
        self.schedule, self.total_steps = schedule, total_steps

    def optimizer_step(self) -> tuple[float, float] | None:
        """AdamW on the last gradients; scheduled: returns (lr, gradient norm before clipping)."""
        assert self.optimizer is not None, "call init_optimizer first"
        info, scale = None, 1.0
        schedule = getattr(self, "schedule", None)
        if schedule is not None:
            lr = lr_at(
                self.optimizer.t,
                peak_lr=schedule.peak_lr,
                total_steps=self.total_steps,
                warmup_steps=schedule.warmup_steps,
                initial_lr=schedule.initial_lr,
                min_lr=schedule.min_lr,
            )
            self.optimizer.lr = lr
            norm = grad_norm(self.grads)
            # clip_grad_norm's clipping, folded into the update: equal to rounding, one pass over the grads fewer
            info, scale = (lr, norm), clip_coef(norm, schedule.max_norm)
        self.optimizer.step(self.grads, grad_scale=scale)
        self.grads = {}  # consumed: do not hold a gradient-sized copy through the next forward
        return info

    def release(self) -> None:
        self.model = self.optimizer = None
        self.grads = {}
        self.taps_ = []

    def state(self):
        assert self.optimizer is not None
        return self.optimizer.params, self.optimizer.m, self.optimizer.v


class BuggedImpl(NumpyImpl):
    """npgpt with one mistake of the catalog (parity/bugs.py) applied inside every call, so the
    clean reference beside it in the same process runs unpatched (``npgpt check --inject-bug``)."""

    def __init__(self, bug: str | tuple[str, ...], tied: bool = False, attention: str = "plain") -> None:
        super().__init__(tied, attention)
        self.bugs = (bug,) if isinstance(bug, str) else tuple(bug)
        self.name = f"npgpt with {' and '.join(self.bugs)}"
        for method in ("load", "forward", "generate_greedy", "filter_logits", "data_batches", "loss_and_grads"):
            setattr(self, method, self._patched(getattr(self, method)))

    def _patched(self, method):
        def call(*args, **kwargs):
            with contextlib.ExitStack() as stack:
                for bug in self.bugs:
                    stack.enter_context(inject(bug))
                return method(*args, **kwargs)

        return call


class TorchImpl(TorchModuleImpl):
    """torchgpt: the book's PyTorch model, autograd and torch.optim.AdamW (the reference of
    ``npgpt check``), in the book's layout; ``attention="sdpa"`` checks its fast path."""

    def __init__(self, device: str = "cpu", attention: str = "book") -> None:
        super().__init__("torchgpt" if attention == "book" else f"torchgpt ({attention})", self._build, device)
        self.attention = attention

    def generate_greedy(self, prompt: np.ndarray, n: int, use_cache: bool = True, context_size: int | None = None):
        """torchgpt.generation's greedy loop with its own KV cache, over the last ``context_size`` tokens."""
        from torchgpt.generation import generate

        seen: list[np.ndarray] = []
        self.module.eval()
        ids = generate(
            self.module, self._ids(prompt), n, context_size or self.cfg.context_length, use_cache=use_cache,
            on_logits=lambda logits: seen.append(logits.cpu().numpy()),
        )  # fmt: skip
        return ids.cpu().numpy(), seen

    def filter_logits(self, logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None):
        from torchgpt.generation import filter_logits

        t = self.torch.from_numpy(np.ascontiguousarray(logits)).to(self.device)
        return filter_logits(t, temperature, top_k, top_p).cpu().numpy()

    def data_batches(self, text: str, batch_size: int, max_length: int, stride: int, drop_last: bool):
        """torchgpt's own create_dataloader_v1 (its GPTDatasetV1 over torch tensors), shuffle off."""
        from torchgpt.data import create_dataloader_v1

        loader = create_dataloader_v1(text, batch_size, max_length, stride, shuffle=False, drop_last=drop_last)
        return [(x.numpy(), y.numpy()) for x, y in loader]

    def _build(self, cfg: GPTConfig):
        from torchgpt.model import GPTModel, set_attention

        return set_attention(GPTModel(cfg), self.attention)
