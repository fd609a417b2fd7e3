"""The adapter protocol: what the comparison engine needs from an implementation, so that any
third implementation can be checked against the same reference (see docs/adapters.md).

Arrays cross the boundary as NumPy arrays keyed by the project's state_dict vocabulary.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from npgpt.config import GPTConfig
from npgpt.layers.dropout import draw_mask
from npgpt.layers.gpt_model import EMB_DROP, dropout_sites
from npgpt.model import GPTModel as NpModel
from npgpt.optim import AdamW as NpAdamW


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

    def optimizer_step(self) -> None:
        """Apply AdamW to the gradients of the last ``loss_and_grads``."""

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(params, AdamW first moments m, second moments v)."""

    # Optional: ``release()`` frees what ``load`` allocated. The engine calls it when it is done
    # with an implementation, so that two GPT-2-sized implementations are never held at once.


def draw_masks(cfg: GPTConfig, B: int, T: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One keep mask per dropout site, with the site's shape; both implementations consume them."""
    residual, attention = (B, T, cfg.emb_dim), (B, cfg.n_heads, T, T)
    return {
        site: draw_mask(rng, residual if site == EMB_DROP or "drop_shortcut" in site else attention, cfg.drop_rate)
        for site in dropout_sites(cfg)
    }


class NumpyImpl:
    """npgpt: the hand-written NumPy forward/backward."""

    name = "npgpt"

    def load(self, cfg: GPTConfig, params: dict[str, np.ndarray], dtype: np.dtype) -> None:
        self.model = NpModel(cfg, params={k: np.array(v, dtype=dtype) for k, v in params.items()})
        self.optimizer: NpAdamW | None = None
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        self.model.eval()
        logits, cache = self.model.forward(ids)
        return logits, list(cache.block_outputs)

    def loss_and_grads(self, ids, targets, masks):
        self.model.train(masks is not None)
        self.grads = {}  # the last call's gradients go before this call's are made
        loss, self.grads = self.model.loss_and_grads(ids, targets, masks=masks)
        return loss, self.grads

    def init_optimizer(self, lr, weight_decay, betas, eps):
        self.optimizer = NpAdamW(self.model.params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def optimizer_step(self) -> None:
        assert self.optimizer is not None, "call init_optimizer first"
        self.optimizer.step(self.grads)
        self.grads = {}  # consumed: do not hold a gradient-sized copy through the next forward

    def release(self) -> None:
        self.model = self.optimizer = None
        self.grads = {}

    def state(self):
        assert self.optimizer is not None
        return self.model.params, self.optimizer.m, self.optimizer.v


class TorchImpl:
    """torchgpt: the book's PyTorch model, autograd and torch.optim.AdamW (the reference).

    Dropout masks are replayed by swapping each nn.Dropout for a module that multiplies by the
    next mask in forward order, the order of ``npgpt.layers.gpt_model.dropout_sites``.
    """

    name = "torchgpt"

    def __init__(self, device: str = "cpu", attention: str = "book") -> None:
        self.device = device
        self.attention = attention

    def load(self, cfg: GPTConfig, params: dict[str, np.ndarray], dtype: np.dtype) -> None:
        import torch

        from parity.convert import to_torch
        from torchgpt.model import set_attention

        self.cfg = cfg
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 tier is defined with TF32 off
        torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        self.dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
        self.model = set_attention(to_torch(cfg, params, dtype=self.dtype), self.attention).to(self.device)
        self.queue: list = []
        _install_replay_dropout(self.model, self.queue)
        self.optimizer = None
        self.outputs: list | None = None  # a list only while ``forward`` collects block outputs
        for block in self.model.trf_blocks:
            block.register_forward_hook(self._keep_output)

    def _keep_output(self, module, inputs, output) -> None:
        if self.outputs is not None:
            self.outputs.append(output.detach())

    def _ids(self, ids: np.ndarray):
        return self.torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(self.device)

    def forward(self, ids):
        self.model.eval()
        self.outputs = []
        with self.torch.no_grad():
            logits = self.model(self._ids(ids))
        blocks, self.outputs = self.outputs, None
        return logits.cpu().numpy(), [o.cpu().numpy() for o in blocks]

    def loss_and_grads(self, ids, targets, masks):
        torch = self.torch
        sites = dropout_sites(self.cfg)
        self.queue[:] = [] if masks is None else [torch.from_numpy(masks[s]).to(self.device) for s in sites]
        self.model.train(masks is not None)
        self.model.zero_grad(set_to_none=True)
        logits = self.model(self._ids(ids))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self._ids(targets).flatten())
        loss.backward()
        if self.queue:
            raise RuntimeError(f"{len(self.queue)} dropout masks were not consumed: the site order differs")
        grads = {k: p.grad.detach().cpu().numpy() for k, p in self.model.named_parameters()}
        return float(loss.item()), grads

    def init_optimizer(self, lr, weight_decay, betas, eps):
        # The fused kernel (CPU and CUDA) updates each element in place: the per-tensor loop
        # (foreach=False) allocates two temporaries the size of the largest parameter (0.6 GB of
        # the check's peak at GPT-2 small in float64). Same formula; older torch or other devices
        # fall back to the loop.
        hyper = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        try:
            self.optimizer = self.torch.optim.AdamW(self.model.parameters(), **hyper, fused=True)
        except (RuntimeError, TypeError, ValueError):
            self.optimizer = self.torch.optim.AdamW(self.model.parameters(), **hyper, foreach=False)

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.model.zero_grad(set_to_none=True)  # consumed: free them before the next forward

    def release(self) -> None:
        self.model = self.optimizer = None
        self.queue, self.outputs = [], None

    def state(self):
        names = dict(self.model.named_parameters())
        params = {k: p.detach().cpu().numpy() for k, p in names.items()}
        st = self.optimizer.state
        m = {k: st[p]["exp_avg"].cpu().numpy() for k, p in names.items()}
        v = {k: st[p]["exp_avg_sq"].cpu().numpy() for k, p in names.items()}
        return params, m, v


def _install_replay_dropout(model, queue: list) -> None:
    import torch

    class ReplayDropout(torch.nn.Module):
        """Multiplies by the next queued keep mask (scaled by 1/(1-p)); identity in eval mode."""

        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training or self.p == 0.0:
                return x
            return x * queue.pop(0) * (1.0 / (1.0 - self.p))

    model.drop_emb = ReplayDropout(model.drop_emb.p)
    for block in model.trf_blocks:
        block.att.dropout = ReplayDropout(block.att.dropout.p)
        block.drop_shortcut = ReplayDropout(block.drop_shortcut.p)
