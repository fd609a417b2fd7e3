"""Any PyTorch GPT-2 module as an implementation under check: the book's layout (torchgpt, or a
reader's own ``GPTModel``) or Hugging Face's ``GPT2LMHeadModel`` layout, detected from the
module's ``state_dict()`` keys.

A layout says how the project's parameters map onto the module's (through the one mapping in
parity/mapping.py), where its blocks and sub-modules are (forward hooks report their outputs, so
the report names the first diverging sub-module), where its dropout modules are (each is
replaced by one that multiplies by the engine's next mask: the same masks on both sides), and
whether its output head is tied to the token embedding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from npgpt.config import GPTConfig
from npgpt.errors import NpgptError
from npgpt.layers.gpt_model import EMB_DROP, dropout_sites
from npgpt.layers.transformer_block import ATT_DROP, SHORTCUT_DROP_1, SHORTCUT_DROP_2
from parity.mapping import from_gpt2, gpt2_to_hf_names, hf_to_gpt2_names, to_gpt2
from parity.outputs import SUBMODULES
from parity.user_code import time_limit, user_raised


def replay_dropout(torch: Any, p: float, next_mask: Callable[[Any], Any]) -> Any:
    """An nn.Module in place of nn.Dropout(p) that replays the reference's keep masks: in train mode
    ``x * next_mask(x) * (1 / (1 - p))``, as npgpt's dropout computes it; the identity in eval mode
    or at p = 0. ``next_mask(x)`` gives the mask for this call (it may refuse an unexpected x)."""

    class ReplayDropout(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training or self.p == 0.0:
                return x
            return x * next_mask(x) * (1.0 / (1.0 - self.p))

    return ReplayDropout()


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    marker: str  # a state_dict key only this layout has
    blocks: str  # attribute path of the block list
    submodules: tuple[str, str, str, str]  # the layout's names for SUBMODULES, inside a block
    # (module path, site suffix) of each dropout module, in call order; "{i}" is the block index
    dropouts: tuple[tuple[str, str], ...]
    tied: bool  # the output head is the token embedding (one tensor)
    to_module: Callable[[GPTConfig, dict[str, np.ndarray]], dict[str, np.ndarray]]
    from_module: Callable[[GPTConfig, dict[str, np.ndarray]], dict[str, np.ndarray]]
    logits: Callable[[Any, Any], Any]  # (module, ids tensor) -> logits tensor


def _book_to(cfg: GPTConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(params)  # the project's vocabulary is the book's state_dict


def _hf_to(cfg: GPTConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return gpt2_to_hf_names(to_gpt2(cfg, params, conv_leading_one=False))


def _hf_from(cfg: GPTConfig, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    _, params = from_gpt2(hf_to_gpt2_names(tensors), n_heads=cfg.n_heads, drop_rate=cfg.drop_rate)
    del params["out_head.weight"]  # tied: wte is the only tensor, its gradient the sum of both uses
    return params


BOOK = Layout(
    name="book",
    marker="tok_emb.weight",
    blocks="trf_blocks",
    submodules=("norm1", "att", "norm2", "ff"),
    dropouts=(
        ("drop_emb", EMB_DROP),
        ("trf_blocks.{i}.att.dropout", ATT_DROP),
        ("trf_blocks.{i}.drop_shortcut", SHORTCUT_DROP_1),  # the book calls this module twice
        ("trf_blocks.{i}.drop_shortcut", SHORTCUT_DROP_2),
    ),
    tied=False,
    to_module=_book_to,
    from_module=lambda cfg, tensors: dict(tensors),
    logits=lambda module, ids: module(ids),
)
HF = Layout(
    name="Hugging Face GPT2LMHeadModel",
    marker="transformer.wte.weight",
    blocks="transformer.h",
    submodules=("ln_1", "attn", "ln_2", "mlp"),
    # attn.attn_dropout is absent on purpose: transformers applies the attention-weight dropout
    # with torch.nn.functional.dropout inside its attention function, where no mask can be
    # replayed; that site runs with dropout off on both sides (the report says so).
    dropouts=(
        ("transformer.drop", EMB_DROP),
        ("transformer.h.{i}.attn.resid_dropout", SHORTCUT_DROP_1),
        ("transformer.h.{i}.mlp.dropout", SHORTCUT_DROP_2),
    ),
    tied=True,
    to_module=_hf_to,
    from_module=_hf_from,
    logits=lambda module, ids: module(input_ids=ids).logits,
)
# nanoGPT's and minGPT's form: Hugging Face's names, nn.Linear weights stored (out, in)
LINEAR_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _transpose_linear(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Conv1D (in, out) <-> nn.Linear (out, in) for the four matrices of each block."""
    return {k: np.ascontiguousarray(v.T) if k.endswith(LINEAR_WEIGHTS) else v for k, v in tensors.items()}


def _linear_to(cfg: GPTConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = _transpose_linear(_hf_to(cfg, params))
    out["lm_head.weight"] = params["out_head.weight"]  # (V, C), nn.Linear's own form; tied: replaced by wte
    return out


def _linear_from(cfg: GPTConfig, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    _, params = from_gpt2(hf_to_gpt2_names(_transpose_linear(tensors)), n_heads=cfg.n_heads, drop_rate=cfg.drop_rate)
    if "lm_head.weight" not in tensors:
        del params["out_head.weight"]  # tied: wte is the only tensor
    return params


def _logits_of(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out


LINEAR = Layout(
    name="GPT-2 names with nn.Linear weights (nanoGPT, minGPT)",
    marker="transformer.wte.weight",
    blocks="transformer.h",
    submodules=("ln_1", "attn", "ln_2", "mlp"),
    dropouts=(
        ("transformer.drop", EMB_DROP),
        ("transformer.h.{i}.attn.attn_dropout", ATT_DROP),  # only where it is called (see _called_dropouts)
        ("transformer.h.{i}.attn.resid_dropout", SHORTCUT_DROP_1),
        ("transformer.h.{i}.mlp.dropout", SHORTCUT_DROP_2),
    ),
    tied=False,  # per module: see detect_layout
    to_module=_linear_to,
    from_module=_linear_from,
    # (idx, targets): nanoGPT returns only the last position's logits without targets
    logits=lambda module, ids: _logits_of(module(ids, ids)),
)
LAYOUTS = (BOOK, HF, LINEAR)


def detect_layout(state: Mapping[str, Any], what: str) -> Layout:
    """The layout of a module's ``state_dict()``, by names and shapes: GPT-2's names with a c_attn
    of shape (C, 3C) are Hugging Face's Conv1D, of shape (3C, C) nn.Linear's; a head that is the
    token embedding's tensor is tied."""
    keys = set(state)
    if BOOK.marker in keys:
        return BOOK
    c_attn = state.get("transformer.h.0.attn.c_attn.weight")
    if HF.marker in keys and c_attn is not None:
        rows, cols = tuple(c_attn.shape)
        if cols == 3 * rows:
            return HF
        if rows == 3 * cols:
            head, wte = state.get("lm_head.weight"), state[HF.marker]
            tied = head is None or head.data_ptr() == wte.data_ptr()
            return dataclasses.replace(LINEAR, tied=tied)
    some = ", ".join(sorted(keys)[:4])
    raise NpgptError(
        f"{what}: its state_dict is not a layout npgpt knows (the book's tok_emb.weight ...; GPT-2's "
        f"transformer.wte.weight ... with Conv1D (HF) or nn.Linear (nanoGPT, minGPT) weights); it has {some} ...; "
        "rename the parameters or write an adapter (docs/adapters.md)"
    )


def hf_config(cfg: GPTConfig, attention: str = "eager") -> Any:
    """transformers' GPT2Config for ``cfg``: the book's tanh GELU (gelu_new), eps 1e-5, the same
    dropout on embeddings and residuals; attention-weight dropout 0 (see HF.dropouts)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=cfg.drop_rate,
        embd_pdrop=cfg.drop_rate,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        attn_implementation=attention,
    )


def get_path(module: Any, path: str) -> Any:
    """The sub-module at a dotted ``path`` (``trf_blocks.0.att``), or None where a part is missing."""
    for part in path.split("."):
        module = getattr(module, part, None) if not part.isdigit() else module[int(part)]
        if module is None:
            return None
    return module


def _set(module: Any, path: str, value: Any) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_path(module, parent) if parent else module, name, value)


class _Converted(Mapping[str, np.ndarray]):
    def __init__(self, convert: Callable[[], dict[str, np.ndarray]]) -> None:
        self._convert: Callable[[], dict[str, np.ndarray]] | None = convert
        self._data: dict[str, np.ndarray] = {}

    def _tensors(self) -> dict[str, np.ndarray]:
        if self._convert is not None:
            self._data, self._convert = self._convert(), None
        return self._data

    def __getitem__(self, key: str) -> np.ndarray:
        return self._tensors()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors())

    def __len__(self) -> int:
        return len(self._tensors())


class TorchModuleImpl:
    """A torch ``nn.Module`` built by ``build(cfg)``, compared through its layout.

    The optimizer is torch.optim.AdamW over ``module.parameters()`` (fused where torch has it)."""

    def __init__(self, name: str, build: Callable[[GPTConfig], Any], device: str = "cpu") -> None:
        self.name = name
        self.build = build
        self.device = device
        self.tied = False  # known once loaded; check.py asks before loading via ``probe``
        self.notes: list[str] = []

    # -- what the engine asks before running ------------------------------------------------

    def probe(self, cfg: GPTConfig) -> None:
        """Build once (float32, CPU) to learn what the engine needs before either side runs: the
        layout, whether the head is tied, and which dropout sites take shared masks."""
        if getattr(self, "_probed", None) == cfg:
            return
        self._probed = cfg
        module = self.build(cfg)
        self.layout = detect_layout(module.state_dict(), self.name)
        self.tied = self.layout.tied
        self._called = self._called_dropouts(module, cfg)
        self._replayed = self._replayable(module, cfg)

    def _called_dropouts(self, module: Any, cfg: GPTConfig) -> set[str] | None:
        """The paths of the nn.Dropout modules a train-mode forward calls: a module can hold one it
        never calls (nanoGPT's attn_dropout, when its attention runs in scaled_dot_product_attention)."""
        import torch

        called: set[str] = set()
        handles = [
            m.register_forward_hook(lambda mod, inp, out, name=name: called.add(name))
            for name, m in module.named_modules()
            if isinstance(m, torch.nn.Dropout)
        ]
        try:
            module.train()
            with torch.no_grad(), self._no_sdpa_dropout(), time_limit(f"{self.name}: a train-mode forward"):
                self.layout.logits(module, torch.zeros((1, min(2, cfg.context_length)), dtype=torch.long))
        except BaseException as exc:
            if not user_raised(exc):
                raise
            return None  # the module's own error is reported where the check runs it; every dropout module counts
        finally:
            for h in handles:
                h.remove()
        return called

    def _no_sdpa_dropout(self) -> Any:
        """While open, torch's scaled_dot_product_attention runs with dropout_p = 0: no mask can be
        replayed inside it (that site is off on both sides, and the report says so)."""
        import contextlib

        import torch

        @contextlib.contextmanager
        def patched():
            real = torch.nn.functional.scaled_dot_product_attention

            def sdpa(*args, dropout_p=0.0, **kwargs):
                if dropout_p:
                    self._sdpa_dropout = True
                return real(*args, dropout_p=0.0, **kwargs)

            torch.nn.functional.scaled_dot_product_attention = sdpa
            try:
                yield
            finally:
                torch.nn.functional.scaled_dot_product_attention = real

        return patched()

    def replayed_sites(self, cfg: GPTConfig) -> set[str]:
        """The dropout sites whose masks this module takes; the engine switches every other site
        off on both sides (the reference's masks map it to None)."""
        return set(self._replayed)

    def _replayable(self, module: Any, cfg: GPTConfig) -> list[str]:
        """Dropout sites, in npgpt's order, that sit at a dropout module of the layout."""
        import torch

        called = getattr(self, "_called", None)
        found = {
            site
            for where, site in self._dropout_paths(cfg)
            if isinstance(get_path(module, where), torch.nn.Dropout) and (called is None or where in called)
        }
        return [s for s in dropout_sites(cfg) if s in found]

    def _dropout_paths(self, cfg: GPTConfig) -> list[tuple[str, str]]:
        out = []
        for path, suffix in self.layout.dropouts:
            if "{i}" in path:
                out += [(path.format(i=i), f"trf_blocks.{i}.{suffix}") for i in range(cfg.n_layers)]
            else:
                out.append((path, suffix))
        return out

    # -- the adapter protocol ---------------------------------------------------------------

    def load(self, cfg: GPTConfig, params, dtype: np.dtype) -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 tier is defined with TF32 off
        torch.backends.cudnn.allow_tf32 = False
        self.torch, self.cfg = torch, cfg
        self.dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
        # in the compared dtype before the weights are made: the module built in float32 and the
        # weights in float64 are never held beside a second copy of either (issue 19: 4.9 -> 2.9 GB
        # while GPT-2 small loads in float64)
        module = self.build(cfg).to(self.dtype)
        own = module.state_dict()
        self.layout = layout = detect_layout(own, self.name)
        self.tied = layout.tied
        ours = layout.to_module(cfg, dict(params))
        if layout.tied and "lm_head.weight" in own:
            ours["lm_head.weight"] = ours["transformer.wte.weight"]
        buffers = {k for k, _ in module.named_buffers()}
        missing = sorted(k for k in own if k not in ours and k not in buffers)
        unknown = sorted(k for k in ours if k not in own)
        wrong = sorted(k for k in ours if k in own and tuple(own[k].shape) != tuple(np.shape(ours[k])))
        if missing or unknown or wrong:
            parts = [
                f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (
                    ("parameters the layout does not know:", missing),
                    ("parameters the module lacks:", unknown),
                    ("wrong shape:", wrong),
                )
                if keys
            ]
            raise NpgptError(
                f"{self.name}: its parameters do not match the {layout.name} layout for this config "
                f"({'; '.join(parts)}); check the class against the layout, or write an adapter (docs/adapters.md)"
            )
        # views of the arrays where the dtype is already right: load_state_dict copies them into the module
        state = {k: torch.as_tensor(np.require(v, requirements=["C", "W"]), dtype=self.dtype) for k, v in ours.items()}
        del ours
        module.load_state_dict(state, strict=False)
        del state
        self.module = module.to(self.device)
        self.optimizer = None
        self.outputs: list | None = None
        self.taps_: list[dict] = []
        self._install_hooks()
        self._install_replay()

    def _install_hooks(self) -> None:
        def first(out):
            return out[0] if isinstance(out, tuple) else out

        def keep(key):
            def hook(mod, inp, out):
                if self.outputs is not None:
                    self.outputs.append((key, first(out).detach()))

            return hook

        blocks = get_path(self.module, self.layout.blocks)
        for i, block in enumerate(blocks):
            for ours, theirs in zip(SUBMODULES, self.layout.submodules, strict=True):
                sub = get_path(block, theirs)
                if sub is not None:
                    sub.register_forward_hook(keep((i, ours)))
            block.register_forward_hook(keep((i, "block")))

    def _install_replay(self) -> None:
        torch = self.torch
        queue: list = []
        self.queue = queue

        p = self.cfg.drop_rate
        self._replayed = self._replayable(self.module, self.cfg)
        for where, _ in self._dropout_paths(self.cfg):
            if isinstance(get_path(self.module, where), torch.nn.Dropout):
                _set(self.module, where, replay_dropout(torch, p, lambda x: queue.pop(0)))
        # every other nn.Dropout would draw its own masks: switched off, and said so
        stray = [n for n, m in self.module.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
        for n in stray:
            get_path(self.module, n).p = 0.0
        order = dropout_sites(self.cfg)
        off = sorted({s.split(".", 2)[-1] for s in order if s not in self._replayed})
        if p > 0 and off:
            self.notes.append(
                f"{self.name}: dropout at {', '.join(off)} cannot take shared masks here; those sites run with "
                "dropout off on both sides (the other sites replay the same masks)"
            )

    def _ids(self, ids: np.ndarray):
        return self.torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(self.device)

    def forward(self, ids):
        self.module.eval()
        self.outputs = []
        with self.torch.no_grad(), self._no_sdpa_dropout():
            logits = self.layout.logits(self.module, self._ids(ids))
        got, self.outputs = self.outputs, None
        blocks = [o for key, o in got if key[1] == "block"]
        self.taps_ = [{} for _ in blocks]
        for (i, what), o in got:
            if what != "block":
                self.taps_[i][what] = o.cpu().numpy()
        return logits.cpu().numpy(), [o.cpu().numpy() for o in blocks]

    def taps(self) -> list[dict[str, np.ndarray]]:
        return self.taps_

    def _named(self) -> dict[str, Any]:
        return dict(self.module.named_parameters())

    def _ours(self, tensors: dict[str, Any]) -> Mapping[str, np.ndarray]:
        """The module's tensors in the project's names, converted on first use: a layout's
        conversion (HF: split c_attn, transpose) copies every tensor, and the engine drops the
        gradients of a training step unread."""
        return _Converted(
            lambda: self.layout.from_module(self.cfg, {k: v.detach().cpu().numpy() for k, v in tensors.items()})
        )

    def loss_and_grads(self, ids, targets, masks):
        torch = self.torch
        self.queue[:] = [] if masks is None else [torch.from_numpy(masks[s]).to(self.device) for s in self._replayed]
        self.module.train(masks is not None)
        self.module.zero_grad(set_to_none=True)
        with self._no_sdpa_dropout():
            logits = self.layout.logits(self.module, self._ids(ids))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self._ids(targets).flatten())
        loss.backward()
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} dropout masks were not consumed: the site order differs")
        grads = self._ours({k: p.grad for k, p in self._named().items()})
        return float(loss.item()), grads

    def init_optimizer(self, lr, weight_decay, betas, eps):
        # The fused kernel (CPU and CUDA) updates each element in place: the per-tensor loop
        # (foreach=False) allocates two temporaries the size of the largest parameter (0.6 GB of
        # the check's peak at GPT-2 small in float64). Same formula; older torch or other devices
        # fall back to the loop.
        hyper = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        try:
            self.optimizer = self.torch.optim.AdamW(self.module.parameters(), **hyper, fused=True)
        except (RuntimeError, TypeError, ValueError):
            self.optimizer = self.torch.optim.AdamW(self.module.parameters(), **hyper, foreach=False)

    def set_schedule(self, schedule, total_steps: int) -> None:
        """Appendix D's loop from now on: torchgpt's learning rate (warmup_cosine_lr, the book's
        inline formula) and torch.nn.utils.clip_grad_norm_."""
        self.schedule, self.total_steps, self.steps_done = schedule, total_steps, 0

    def optimizer_step(self) -> tuple[float, float] | None:
        info = None
        schedule = getattr(self, "schedule", None)
        if schedule is not None:
            from torchgpt.train import warmup_cosine_lr

            lr = warmup_cosine_lr(
                self.steps_done, schedule.peak_lr, self.total_steps, schedule.warmup_steps, schedule.initial_lr,
                schedule.min_lr,
            )  # fmt: skip
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            norm = self.torch.nn.utils.clip_grad_norm_(self.module.parameters(), schedule.max_norm)
            info = (lr, float(norm))
            self.steps_done += 1
        self.optimizer.step()
        self.module.zero_grad(set_to_none=True)  # consumed: free them before the next forward
        return info

    def release(self) -> None:
        self.module = self.optimizer = None
        self.queue, self.outputs = [], None

    def state(self):
        named = self._named()
        st = self.optimizer.state
        params = self._ours(named)
        m = self._ours({k: st[p]["exp_avg"] for k, p in named.items()})
        v = self._ours({k: st[p]["exp_avg_sq"] for k, p in named.items()})
        return params, m, v
