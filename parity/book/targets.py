"""What ``npgpt check-book`` knows about each name of the book: how to build the reader's object
with the book's signature, the weights it takes (by the book's parameter names), how to run it
(torch autograd for the gradients) and the NumPy reference it must match.

Every target maps one drawn ``Example`` to two dicts of arrays with the same keys: the reader's
(``run``) and the reference's (``reference``). Keys starting with ``grad `` are gradients; the
others are forward outputs (what a diagnosis compares). The examples and their data are in
``cases.py``, running a torch object as the book's in ``run_torch.py``; this module is the table
of names (``MODULES``, ``GPT_MODEL``, ``FUNCTIONS``) and each name's reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from npgpt import generation
from npgpt.config import GPTConfig
from npgpt.layers import feed_forward, gelu, layer_norm, multi_head_attention, transformer_block
from npgpt.layers.softmax import softmax
from parity.book.cases import (
    NEW_TOKENS,
    NOTES,
    VOCAB,
    Example,
    UnusableError,
    attention_weights,
    block_weights,
    draw_x,
    ff_weights,
    layer_norm_weights,
    linear_weights,
    rng_for,
)
from parity.book.run_torch import (
    DROP_RATE,
    book_parameters,
    cast,
    keep_mask,
    load_into,
    np_dtype,
    output_of,
    replay_attention_dropout,
    run_module,
)
from parity.engine import ZERO_GRADIENT, draw_ids, random_params


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    chapter: int
    kind: str  # "module" (a class whose instances are nn.Modules), "dataset" or "function"
    build: Callable[[Any, Example], Any]  # (reader's class or function, case) -> the object to run
    run: Callable[[Any, Example, Any, Any], dict[str, np.ndarray]]  # (object, case, torch, dtype)
    reference: Callable[[Example, np.dtype], dict[str, np.ndarray]]
    bug_components: tuple[str, ...] = ()  # catalog components whose mistakes can show here
    swaps: tuple[tuple[str, str], ...] = ()  # (attribute path, book class) replaced by the reference's
    tier: str = "component"  # tolerance tiers: component (fwd/bwd) or model


# -- shared pieces -------------------------------------------------------------------------------


# -- chapter 4's layers ----------------------------------------------------------------------------


TRAIN_OUTPUT = "output (train mode, the same dropout mask)"


def _module_target(
    name: str,
    chapter: int,
    *,
    build: Callable[[Any, Example], Any],
    weights: Callable[[Example], dict[str, np.ndarray]],
    inputs: Callable[..., np.ndarray],
    ref: Callable,
    bugs: tuple[str, ...] = (),
    swaps: tuple[tuple[str, str], ...] = (),
    tier: str = "component",
    dropout: tuple[str, Callable[[Example], int]] | None = None,
) -> Target:
    """A class checked in eval mode (output, gradients); with ``dropout`` (its attention-weight
    dropout module's name, and its number of heads) also in train mode, the reader's dropout
    replaced by one that applies the reference's keep mask: where the dropout sits is compared."""

    def run(obj, case, torch, dtype):
        x = inputs(case, np_dtype(dtype, torch))
        got = run_module(obj, weights(case), x, 5, case, torch, dtype)
        if dropout is not None:
            attribute, heads = dropout
            keep = torch.from_numpy(keep_mask(case, heads(case)))
            setattr(obj, attribute, replay_attention_dropout(torch, keep))
            obj.train()
            with torch.no_grad():
                got[TRAIN_OUTPUT] = output_of(obj(torch.from_numpy(x)), obj).numpy()
        return got

    def reference(case, dtype):
        x = inputs(case, dtype)
        out, back = ref(x, cast(weights(case), dtype), case)
        dout = draw_x(case, dtype, 5, out.shape)
        outputs = {"output": out, **back(dout)}
        if dropout is not None:
            params = cast(weights(case), dtype)
            outputs[TRAIN_OUTPUT] = ref(x, params, case, keep=keep_mask(case, dropout[1](case)))[0]
        return outputs

    return Target(name, chapter, "module", build, run, reference, bugs, swaps, tier)


def _ref_layer_norm(x, w, case):
    out, cache = layer_norm.forward(x, w["scale"], w["shift"])

    def back(dout):
        dx, dscale, dshift = layer_norm.backward(dout, cache)
        return {"grad input": dx, "grad scale": dscale, "grad shift": dshift}

    return out, back


def _ref_gelu(x, w, case):
    out, cache = gelu.forward(x)
    return out, lambda dout: {"grad input": gelu.backward(dout, cache)}


def _ref_ff(x, w, case):
    out, cache = feed_forward.forward(x, w, "")

    def back(dout):
        dx, grads = feed_forward.backward(dout, cache)
        return {"grad input": dx, **{f"grad {k}": g for k, g in grads.items()}}

    return out, back


def _ref_attention(heads: Callable[[Example], int], identity_out: bool) -> Callable:
    """npgpt's MultiHeadAttention; ``identity_out`` for the chapter 3 classes without out_proj."""

    def ref(x, w, case, keep=None):
        params = dict(w)
        C = x.shape[-1] if not identity_out else w["W_query.weight"].shape[0]
        if identity_out:
            params["out_proj.weight"] = np.eye(C, dtype=x.dtype)
            params["out_proj.bias"] = np.zeros(C, dtype=x.dtype)
        train = {} if keep is None else {"drop_rate": DROP_RATE, "train": True, "mask": keep}
        out, cache = multi_head_attention.forward(x, params, "", heads(case), **train)

        def back(dout):
            dx, grads = multi_head_attention.backward(dout, cache)
            keep = {k: g for k, g in grads.items() if k in w}
            return {"grad input": dx, **{f"grad {k}": g for k, g in keep.items()}}

        return out, back

    return ref


def _ref_block(x, w, case):
    out, cache = transformer_block.forward(x, w, "", case.H)

    def back(dout):
        dx, grads = transformer_block.backward(dout, cache)
        return {"grad input": dx, **{f"grad {k}": g for k, g in grads.items()}}

    return out, back


# -- chapter 3's attention classes ----------------------------------------------------------------


def wrapper_weights(case: Example) -> dict[str, np.ndarray]:
    """Each head a CausalAttention with d_out = D: heads.{h}.W_query.weight (D, C) ..."""
    rng, C, D = rng_for(case, 2), case.C, case.D
    w = {}
    for h in range(case.H):
        for name in ("W_query", "W_key", "W_value"):
            w.update(linear_weights(rng, D, C, f"heads.{h}.{name}"))
    return w


def _ref_wrapper(x, w, case):
    """The wrapper is multi-head attention with the heads' matrices stacked and no out_proj."""
    stacked = {}
    for name in ("W_query", "W_key", "W_value"):
        for part in ("weight", "bias"):
            stacked[f"{name}.{part}"] = np.concatenate([w[f"heads.{h}.{name}.{part}"] for h in range(case.H)])
    out, back_stacked = _ref_attention(lambda c: c.H, identity_out=True)(x, stacked, case)

    def back(dout):
        grads = back_stacked(dout)
        split = {"grad input": grads.pop("grad input")}
        for key, g in grads.items():
            name, part = key.removeprefix("grad ").split(".")
            for h, piece in enumerate(np.split(g, case.H)):
                split[f"grad heads.{h}.{name}.{part}"] = piece
        return split

    return out, back


def self_attention_v1_weights(case: Example) -> dict[str, np.ndarray]:
    rng = rng_for(case, 2)
    return {name: rng.standard_normal((case.C, case.D)) / np.sqrt(case.C) for name in ("W_query", "W_key", "W_value")}


def self_attention_v2_weights(case: Example) -> dict[str, np.ndarray]:
    """The book's weight transfer: SelfAttention_v2's Linear weights are v1's matrices transposed."""
    return {f"{k}.weight": v.T.copy() for k, v in self_attention_v1_weights(case).items()}


def _ref_unmasked(x, w, case):
    """Chapter 3's first self-attention: one sequence (T, C), no mask, scores / sqrt(d_out). The
    backward is the softmax's Jacobian-vector product (docs/math/attention.md), unmasked.

    It lives here, not in npgpt/layers: no layer of GPT-2 attends without the causal mask or to
    one unbatched sequence, so it is the reference of chapter 3's two teaching classes only
    (SelfAttention_v1/_v2); the masked, batched, multi-head case is multi_head_attention's."""
    Wq, Wk, Wv = (w[k] if k in w else w[f"{k}.weight"].T for k in ("W_query", "W_key", "W_value"))
    q, k, v = x @ Wq, x @ Wk, x @ Wv  # (T, D)
    scale = 1.0 / np.sqrt(k.shape[-1])
    a = softmax((q @ k.T) * scale)  # (T, T)
    out = a @ v

    def back(dout):
        dv = a.T @ dout
        da = dout @ v.T
        ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
        dq, dk = ds @ k, ds.T @ q
        dWq, dWk, dWv = x.T @ dq, x.T @ dk, x.T @ dv
        dx = dq @ Wq.T + dk @ Wk.T + dv @ Wv.T
        grads = {"W_query": dWq, "W_key": dWk, "W_value": dWv}
        if "W_query" in w:
            return {"grad input": dx, **{f"grad {n}": g for n, g in grads.items()}}
        return {"grad input": dx, **{f"grad {n}.weight": g.T for n, g in grads.items()}}

    return out, back


# -- builders (the book's signatures) ----------------------------------------------------------


def build_mha(cls, case):
    return cls(case.C, case.C, case.cfg().context_length, 0.1, case.H, qkv_bias=True)


def _causal(cls, case):
    return cls(case.C, case.C, case.cfg().context_length, 0.1, qkv_bias=True)


def build_wrapper(cls, case):
    return cls(case.C, case.D, case.cfg().context_length, 0.1, case.H, qkv_bias=True)


def single_sequence(case: Example, dtype: np.dtype) -> np.ndarray:
    return draw_x(case, dtype, 4, (case.T, case.C))


ATTENTION = ("MultiHeadAttention",)
MODULES = [
    _module_target(
        "SelfAttention_v1", 3, build=lambda cls, c: cls(c.C, c.D), weights=self_attention_v1_weights,
        inputs=single_sequence, ref=_ref_unmasked,
    ),
    _module_target(
        "SelfAttention_v2", 3, build=lambda cls, c: cls(c.C, c.D, qkv_bias=False),
        weights=self_attention_v2_weights, inputs=single_sequence, ref=_ref_unmasked,
    ),
    _module_target(
        "CausalAttention", 3, build=_causal, weights=lambda c: attention_weights(c, out_proj=False), inputs=draw_x,
        ref=_ref_attention(lambda c: 1, identity_out=True), bugs=ATTENTION, dropout=("dropout", lambda c: 1),
    ),
    _module_target(
        "MultiHeadAttentionWrapper", 3, build=build_wrapper, weights=wrapper_weights, inputs=draw_x, ref=_ref_wrapper,
        bugs=ATTENTION,
    ),
    _module_target(
        "MultiHeadAttention", 3, build=build_mha, weights=attention_weights, inputs=draw_x,
        ref=_ref_attention(lambda c: c.H, identity_out=False), bugs=ATTENTION, dropout=("dropout", lambda c: c.H),
    ),
    _module_target(
        "LayerNorm", 4, build=lambda cls, c: cls(c.C), weights=layer_norm_weights, inputs=draw_x, ref=_ref_layer_norm,
        bugs=("LayerNorm",),
    ),
    _module_target(
        "GELU", 4, build=lambda cls, c: cls(), weights=lambda c: {}, inputs=draw_x, ref=_ref_gelu, bugs=("GELU",)
    ),
    _module_target(
        "FeedForward", 4, build=lambda cls, c: cls(c.book_cfg()), weights=ff_weights, inputs=draw_x, ref=_ref_ff,
        bugs=("GELU",), swaps=(("layers.1", "GELU"),),
    ),
    _module_target(
        "TransformerBlock", 4, build=lambda cls, c: cls(c.book_cfg()), weights=block_weights, inputs=draw_x,
        ref=_ref_block, bugs=("TransformerBlock",),
        swaps=(("norm1", "LayerNorm"), ("norm2", "LayerNorm"), ("att", "MultiHeadAttention"), ("ff", "FeedForward")),
    ),
]  # fmt: skip
# a reader's MultiHeadAttention without out_proj: the rest checked with the projection as the identity
MHA_WITHOUT_OUT_PROJ = _module_target(
    "MultiHeadAttention", 3, build=build_mha, weights=lambda c: attention_weights(c, out_proj=False), inputs=draw_x,
    ref=_ref_attention(lambda c: c.H, identity_out=True), bugs=ATTENTION, dropout=("dropout", lambda c: c.H),
)  # fmt: skip


# -- the model --------------------------------------------------------------------------------------


def _ids(case: Example, salt: int, vocab: int = VOCAB) -> np.ndarray:
    return draw_ids(rng_for(case, salt), vocab, (case.B, case.T))


def _model_weights(case: Example) -> dict[str, np.ndarray]:
    return random_params(case.cfg(), case.seed)


def _run_model(obj, case, torch, dtype):
    return run_module(obj, _model_weights(case), _ids(case, 6), 7, case, torch, dtype)


def _ref_model(case, dtype):
    from npgpt.layers import gpt_model

    params = cast(_model_weights(case), dtype)
    logits, cache = gpt_model.forward(params, case.cfg(), _ids(case, 6))
    grads = gpt_model.backward(draw_x(case, dtype, 7, logits.shape), cache)
    return {"output": logits, **{f"grad {k}": g for k, g in grads.items()}}


GPT_MODEL = Target(
    "GPTModel", 4, "module", lambda cls, c: cls(c.book_cfg()), _run_model, _ref_model, ("GPTModel",),
    swaps=(("trf_blocks.{i}", "TransformerBlock"), ("final_norm", "LayerNorm")), tier="model",
)  # fmt: skip


# -- functions that drive a model: the reference model (torchgpt's) is passed to the reader's --------


def reference_model(case: Example, torch: Any, dtype: Any, cls: Any = None) -> Any:
    """torchgpt's GPTModel (or ``cls``) with the case's weights: the functions below are checked on a
    model known to be right, so a failure is the function's."""
    from torchgpt.model import GPTModel

    model = (cls or GPTModel)(case.book_cfg())
    load_into(model, _model_weights(case), torch, dtype)
    return model.eval()


READER_MODEL: Any = None  # the reader's own GPTModel class, when check-book found one


def _on_a_model(call: Callable[[Any], Any], case: Example, torch: Any, dtype: Any) -> Any:
    """``call(model)`` on torchgpt's model; when the reader's function uses a method only the
    reader's own GPTModel has (a KV cache's ``reset_kv_cache``), on that model, same weights."""
    try:
        return call(reference_model(case, torch, dtype))
    except AttributeError as exc:
        if READER_MODEL is None or "object has no attribute" not in str(exc):
            raise
        method = str(exc).rsplit("attribute", 1)[-1].strip(" '\"")
        NOTES.append(
            f"(run on your own GPTModel, loaded with the same weights: it calls {method}, which the book's "
            "model does not have; a failure here can be the model's: see its line)"
        )
        return call(reference_model(case, torch, dtype, READER_MODEL))


def _np_model(case: Example, dtype: np.dtype) -> Any:
    from npgpt.model import GPTModel

    return GPTModel(case.cfg(), params=cast(_model_weights(case), dtype)).eval()  # no dropout, as the reader's


def _context(case: Example) -> int:
    return max(1, case.T - 1)  # shorter than the prompt: the crop to the context is exercised


def _run_generate_simple(fn, case, torch, dtype):
    ids = torch.from_numpy(_ids(case, 6))
    out = _on_a_model(lambda model: fn(model, ids, NEW_TOKENS, _context(case)), case, torch, dtype)
    return {"tokens": np.asarray(out)}


def _ref_generate_simple(case, dtype):
    return {
        "tokens": generation.generate_text_simple(_np_model(case, dtype), _ids(case, 6), NEW_TOKENS, _context(case))
    }


SAMPLING = (1.4, 3)  # (temperature, top_k): the filter is compared through the probabilities drawn from


def _run_generate(fn, case, torch, dtype):
    return _on_a_model(lambda model: _generate_on(fn, model, case, torch), case, torch, dtype)


def _generate_on(fn, model, case, torch):
    idx = torch.from_numpy(_ids(case, 6))
    greedy = fn(
        model=model, idx=idx, max_new_tokens=NEW_TOKENS, context_size=_context(case), temperature=0.0, top_k=None
    )
    seen = []
    real = torch.multinomial

    def record(probs, num_samples, *args, **kwargs):  # the draw replaced by the argmax: no randomness
        seen.append(probs.detach().numpy().copy())
        return probs.argmax(dim=-1, keepdim=True)

    torch.multinomial = record
    try:
        temperature, top_k = SAMPLING
        fn(model=model, idx=idx, max_new_tokens=1, context_size=_context(case), temperature=temperature, top_k=top_k)
    finally:
        torch.multinomial = real
    if len(seen) != 1:
        raise UnusableError(
            f"with temperature > 0 it called torch.multinomial {len(seen)} times for one token; the book samples once"
        )
    return {"tokens": np.asarray(greedy), "probabilities": seen[0]}


def _ref_generate(case, dtype):
    model = _np_model(case, dtype)
    ids = _ids(case, 6)
    greedy = generation.generate(model, ids, NEW_TOKENS, _context(case), temperature=0.0, use_cache=False)
    temperature, top_k = SAMPLING
    logits = model(ids[:, -_context(case) :])[:, -1, :]
    probs = softmax(generation.filter_logits(logits, temperature, min(top_k, VOCAB), None))
    return {"tokens": greedy, "probabilities": probs}


def _run_loss_batch(fn, case, torch, dtype):
    model = reference_model(case, torch, dtype)
    loss = fn(torch.from_numpy(_ids(case, 6)), torch.from_numpy(_ids(case, 8)), model, torch.device("cpu"))
    loss.backward()
    grads = {f"grad {k}": p.grad.numpy() for k, p in model.named_parameters() if p.grad is not None}
    return {"loss": np.asarray(loss.detach().numpy()), **grads}


def _ref_loss_batch(case, dtype):
    loss, grads = _np_model(case, dtype).loss_and_grads(_ids(case, 6), _ids(case, 8))
    return {"loss": np.asarray(loss), **{f"grad {k}": g for k, g in grads.items()}}


LOADER_BATCHES = 3


def _run_loss_loader(fn, case, torch, dtype):
    model = reference_model(case, torch, dtype)
    loader = [
        (torch.from_numpy(_ids(case, 10 + i)), torch.from_numpy(_ids(case, 20 + i))) for i in range(LOADER_BATCHES)
    ]
    with torch.no_grad():
        every = fn(loader, model, torch.device("cpu"))
        two = fn(loader, model, torch.device("cpu"), num_batches=2)
    return {"loss (all batches)": np.asarray(float(every)), "loss (num_batches=2)": np.asarray(float(two))}


def _ref_loss_loader(case, dtype):
    model = _np_model(case, dtype)
    losses = [float(model.loss(_ids(case, 10 + i), _ids(case, 20 + i))) for i in range(LOADER_BATCHES)]
    return {"loss (all batches)": np.asarray(np.mean(losses)), "loss (num_batches=2)": np.asarray(np.mean(losses[:2]))}


# -- chapter 2's data pipeline: windows of the embedded text ------------------------------------------


def _windows(case: Example) -> tuple[int, int, int]:
    """(batch_size, max_length, stride) from the case's numbers."""
    return case.B, case.T, case.D


DOCUMENT_BREAK = True  # check-book turns it off for a reader whose tokenizer call refuses the break


def _text() -> str:
    """The embedded story with a document break in it, as in the book's later data: a tokenizer
    call without allowed_special={"<|endoftext|>"} raises on it."""
    from npgpt.data import embedded_text

    story = embedded_text()
    if not DOCUMENT_BREAK:
        return story
    middle = story.find(" ", len(story) // 2)
    return f"{story[:middle]} <|endoftext|> {story[middle:]}"


def _run_dataset(cls, case, torch, dtype):
    from npgpt.tokenizer import get_tokenizer

    _, max_length, stride = _windows(case)
    dataset = cls(_text(), get_tokenizer(), max_length, stride)
    pairs = [dataset[i] for i in range(len(dataset))]
    return {
        "inputs": np.stack([np.asarray(x) for x, _ in pairs]) if pairs else np.zeros((0, max_length), np.int64),
        "targets": np.stack([np.asarray(y) for _, y in pairs]) if pairs else np.zeros((0, max_length), np.int64),
    }


def _ref_dataset(case, dtype):
    from npgpt import data as np_data
    from npgpt.tokenizer import get_tokenizer

    _, max_length, stride = _windows(case)
    dataset = np_data.GPTDatasetV1(_text(), get_tokenizer(), max_length, stride)
    return {"inputs": dataset.input_ids, "targets": dataset.target_ids}


def _run_loader(fn, case, torch, dtype):
    batch_size, max_length, stride = _windows(case)
    loader = fn(
        _text(),
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        shuffle=False,
        drop_last=True,
        num_workers=0,
    )
    batches = [(np.asarray(x), np.asarray(y)) for x, y in loader]
    return _concat(batches, max_length)


def _ref_loader(case, dtype):
    from npgpt import data as np_data
    from npgpt.tokenizer import get_tokenizer

    batch_size, max_length, stride = _windows(case)
    dataset = np_data.GPTDatasetV1(_text(), get_tokenizer(), max_length, stride)
    return _concat(list(np_data.DataLoader(dataset, batch_size, shuffle=False, drop_last=True)), max_length)


def _concat(batches: list, max_length: int) -> dict[str, np.ndarray]:
    empty = np.zeros((0, max_length), np.int64)
    return {
        "inputs": np.concatenate([x for x, _ in batches]) if batches else empty,
        "targets": np.concatenate([y for _, y in batches]) if batches else empty,
        "batch sizes": np.array([len(x) for x, _ in batches], dtype=np.int64),
    }


# -- appendix D's train_model: k steps of warmup, cosine decay and clipping --------------------------

TRAIN_STEPS, WARMUP = 4, 2
INITIAL_LR, PEAK_LR, MIN_LR = 1e-4, 4e-3, 1e-5


class _TinyTokenizer:
    """generate_and_print_sample's tokenizer for the cases' 61-token model (GPT-2's ids would not fit)."""

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return [1, 2, 3]

    def decode(self, ids: Any) -> str:
        return " ".join(str(int(i)) for i in ids)


def _train_cfg(case: Example) -> GPTConfig:
    return dataclasses.replace(case.cfg(), drop_rate=0.0)  # the reader's loop calls model.train()


def _train_batches(case: Example) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(_ids(case, 30 + i), _ids(case, 40 + i)) for i in range(TRAIN_STEPS)]


def _run_train_model(fn, case, torch, dtype):
    from torchgpt.model import GPTModel

    model = GPTModel(_train_cfg(case).to_dict())
    weights = _model_weights(case)
    load_into(model, weights, torch, dtype)
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in _train_batches(case)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, weight_decay=0.1)
    out = fn(
        model=model, train_loader=batches, val_loader=batches[:1], optimizer=optimizer, device=torch.device("cpu"),
        n_epochs=1, eval_freq=10 * TRAIN_STEPS, eval_iter=1, start_context="Every effort moves you",
        tokenizer=_TinyTokenizer(), warmup_steps=WARMUP, initial_lr=INITIAL_LR, min_lr=MIN_LR,
    )  # fmt: skip
    if not (isinstance(out, tuple | list) and len(out) == 4):
        raise UnusableError(
            "train_model returned something else than the book's (train_losses, val_losses, track_tokens_seen, "
            "track_lrs)"
        )
    params = book_parameters(model, weights)
    learned = {f"{k} after {TRAIN_STEPS} steps": p.detach().numpy() for k, p in params.items() if _learned(k)}
    return {"learning rates": np.asarray(out[3], dtype=np.float64), **learned}


def _learned(name: str) -> bool:
    """Compared after the steps: all but the key bias, whose gradient is zero in exact arithmetic
    (softmax ignores a shift shared by every key): AdamW scales its round-off up to steps of lr."""
    return not name.endswith(ZERO_GRADIENT)


def ref_train_model(case: Example, dtype: np.dtype, clip_after_warmup_step: bool = False) -> dict[str, np.ndarray]:
    """npgpt's appendix D loop (npgpt.train.train_model's schedule, clipping and AdamW) for the
    same batches. ``clip_after_warmup_step``: the printed listing's ``global_step > warmup_steps``."""
    from npgpt.model import GPTModel
    from npgpt.optim import AdamW, clip_grad_norm
    from npgpt.schedule import lr_at

    model = GPTModel(_train_cfg(case), params=cast(_model_weights(case), dtype))
    optimizer = AdamW(model.params, lr=PEAK_LR, weight_decay=0.1)
    lrs = []
    for step, (ids, targets) in enumerate(_train_batches(case)):
        optimizer.lr = lr_at(
            step, peak_lr=PEAK_LR, total_steps=TRAIN_STEPS, warmup_steps=WARMUP, initial_lr=INITIAL_LR, min_lr=MIN_LR
        )
        lrs.append(optimizer.lr)
        _, grads = model.loss_and_grads(ids, targets)
        if step > WARMUP or (step == WARMUP and not clip_after_warmup_step):
            clip_grad_norm(grads, 1.0)
        optimizer.step(grads)
    learned = {f"{k} after {TRAIN_STEPS} steps": v for k, v in model.params.items() if _learned(k)}
    return {"learning rates": np.asarray(lrs), **learned}


def _function(
    name: str, chapter: int, run: Callable, ref: Callable, bugs: tuple[str, ...] = (), tier="model", swaps=()
):
    """A class or function of the reader's that is called, not trained; ``swaps`` name the other
    book functions it calls, replaced by the reference's while it runs."""
    kind = "dataset" if name == "GPTDatasetV1" else "function"
    return Target(name, chapter, kind, lambda obj, case: obj, run, ref, bugs, swaps, tier)


FUNCTIONS = [
    _function("GPTDatasetV1", 2, _run_dataset, _ref_dataset, ("GPTDatasetV1",), tier="exact"),
    _function("create_dataloader_v1", 2, _run_loader, _ref_loader, tier="exact", swaps=(("global", "GPTDatasetV1"),)),
    _function("generate_text_simple", 4, _run_generate_simple, _ref_generate_simple),
    _function("calc_loss_batch", 5, _run_loss_batch, _ref_loss_batch, ("calc_loss_batch",)),
    _function("calc_loss_loader", 5, _run_loss_loader, _ref_loss_loader, swaps=(("global", "calc_loss_batch"),)),
    _function("generate", 5, _run_generate, _ref_generate, ("generate",)),
    _function("train_model", 5, _run_train_model, ref_train_model, swaps=(("global", "calc_loss_batch"),)),
]  # train_model is appendix D's, which builds on chapter 5

# bottom-up: a class is checked after the classes it is built from
TARGETS: dict[str, Target] = {t.name: t for t in (*FUNCTIONS[:2], *MODULES, GPT_MODEL, *FUNCTIONS[2:])}
