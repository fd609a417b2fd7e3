"""A compact GPT-2 in JAX, checked by ``npgpt check --impl`` like any user's implementation:

    npgpt check --impl examples/jax_gpt2/gpt2_jax.py:JaxGPT2 [--dtype both]

It is the template for a non-torch framework: pure functions over a dict of arrays keyed by the
book's state_dict names, gradients from ``jax.value_and_grad`` (an autodiff oracle that shares
nothing with torch or with npgpt's hand-written backward), AdamW written out with
torch.optim.AdamW's semantics, and the adapter protocol of docs/adapters.md on top (about 40
lines). Dropout takes the engine's masks, so the training steps are compared with dropout on.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # the float64 tier; float32 arrays stay float32


# --- the model: pure functions --------------------------------------------------------------


def layer_norm(x, scale, shift):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as the book's LayerNorm
    return scale * (x - mean) / jnp.sqrt(var + 1e-5) + shift


def gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def linear(x, p, name):
    out = x @ p[f"{name}.weight"].T
    return out + p[f"{name}.bias"] if f"{name}.bias" in p else out


def dropout(x, masks, site, rate):
    if masks is None or masks.get(site) is None:
        return x
    return x * masks[site] * (1.0 / (1.0 - rate))


def attention(x, p, prefix, n_heads, masks, rate):
    B, T, C = x.shape
    D = C // n_heads

    def heads(name):
        return linear(x, p, prefix + name).reshape(B, T, n_heads, D).transpose(0, 2, 1, 3)  # (B, H, T, D)

    q, k, v = heads("W_query"), heads("W_key"), heads("W_value")
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, T)
    scores = jnp.where(jnp.triu(jnp.ones((T, T), dtype=bool), k=1), -jnp.inf, scores) / math.sqrt(D)
    weights = dropout(jax.nn.softmax(scores, axis=-1), masks, prefix + "dropout", rate)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return linear(context, p, prefix + "out_proj")


def forward(p, ids, cfg, masks=None):
    """(logits, [block outputs], [sub-layer outputs per block])."""
    rate = cfg["drop_rate"]
    T = ids.shape[1]
    x = dropout(p["tok_emb.weight"][ids] + p["pos_emb.weight"][:T], masks, "drop_emb", rate)
    blocks, taps = [], []
    for i in range(cfg["n_layers"]):
        b = f"trf_blocks.{i}."
        h1 = layer_norm(x, p[b + "norm1.scale"], p[b + "norm1.shift"])
        a = attention(h1, p, b + "att.", cfg["n_heads"], masks, rate)
        x = x + dropout(a, masks, b + "drop_shortcut.att", rate)
        h2 = layer_norm(x, p[b + "norm2.scale"], p[b + "norm2.shift"])
        f = linear(gelu(linear(h2, p, b + "ff.layers.0")), p, b + "ff.layers.2")
        x = x + dropout(f, masks, b + "drop_shortcut.ff", rate)
        blocks.append(x)
        taps.append({"norm1": h1, "att": a, "norm2": h2, "ff": f})
    x = layer_norm(x, p["final_norm.scale"], p["final_norm.shift"])
    return x @ p["out_head.weight"].T, blocks, taps


def loss_fn(p, ids, targets, cfg, masks):
    logits = forward(p, ids, cfg, masks)[0]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()


def adamw(p, g, m, v, t, lr, wd, betas, eps):
    """torch.optim.AdamW: decoupled decay, bias-corrected moments, eps after the square root."""
    b1, b2 = betas
    m = {k: b1 * m[k] + (1 - b1) * g[k] for k in p}
    v = {k: b2 * v[k] + (1 - b2) * g[k] ** 2 for k in p}
    step = lr / (1 - b1**t)
    root = math.sqrt(1 - b2**t)
    p = {k: p[k] * (1 - lr * wd) - step * m[k] / (jnp.sqrt(v[k]) / root + eps) for k in p}
    return p, m, v


# --- the adapter (docs/adapters.md) -----------------------------------------------------------


class JaxGPT2:
    name = "jax GPT-2 (examples/jax_gpt2)"

    def load(self, cfg, params, dtype):
        self.cfg = cfg.to_dict()
        self.p = {k: jnp.asarray(np.asarray(v, dtype=dtype)) for k, v in params.items()}
        self.grad_fn = jax.jit(jax.value_and_grad(loss_fn), static_argnums=3)
        self.grads = None

    def forward(self, ids):
        logits, blocks, self.taps_ = forward(self.p, jnp.asarray(ids), self.cfg)
        return np.asarray(logits), [np.asarray(b) for b in blocks]

    def taps(self):
        return [{k: np.asarray(v) for k, v in t.items()} for t in self.taps_]

    def loss_and_grads(self, ids, targets, masks):
        masks = None if masks is None else {k: jnp.asarray(v) for k, v in masks.items()}
        loss, self.grads = self.grad_fn(self.p, jnp.asarray(ids), jnp.asarray(targets), _Cfg(self.cfg), masks)
        return float(loss), {k: np.asarray(g) for k, g in self.grads.items()}

    def init_optimizer(self, lr, weight_decay, betas, eps):
        self.hyper = (lr, weight_decay, betas, eps)
        self.m = {k: jnp.zeros_like(x) for k, x in self.p.items()}
        self.v = {k: jnp.zeros_like(x) for k, x in self.p.items()}
        self.t = 0

    def set_schedule(self, schedule, total_steps):
        """Appendix D's warmup + cosine and global-norm clipping, written here (its own code)."""
        self.schedule, self.total_steps = schedule, total_steps

    def optimizer_step(self):
        info = None
        if getattr(self, "schedule", None) is not None:
            s, t = self.schedule, self.t
            if t < s.warmup_steps:
                lr = s.initial_lr + t * (s.peak_lr - s.initial_lr) / s.warmup_steps
            else:
                progress = (t - s.warmup_steps) / max(self.total_steps - s.warmup_steps, 1)
                lr = s.min_lr + (s.peak_lr - s.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in self.grads.values())))
            coef = min(1.0, s.max_norm / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule
            self.grads = {k: g * coef for k, g in self.grads.items()}
            self.hyper = (lr, *self.hyper[1:])
            info = (lr, norm)
        self.t += 1
        self.p, self.m, self.v = adamw(self.p, self.grads, self.m, self.v, self.t, *self.hyper)
        return info

    def state(self):
        return tuple({k: np.asarray(x) for k, x in d.items()} for d in (self.p, self.m, self.v))

    def release(self):
        self.p = self.m = self.v = self.grads = None


class _Cfg(dict):
    """The config as a hashable dict, so jit can treat it as static."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))
