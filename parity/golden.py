"""Golden bundles: the NumPy reference's inputs, weights and every output written to disk, so an
implementation in any language (C, CUDA, Rust, Mojo ...) can be checked without Python in its
loop: it reads the inputs and weights, writes its outputs under the same names, and
``npgpt golden verify`` prints the same report as ``npgpt check`` with the same exit codes.

A bundle is a directory (float64 throughout; token ids int64; masks uint8):

    manifest.json            config, seeds, hyperparameters and schedule, the tolerance table, the
                             layout, the versions that wrote it, and every tensor: file, role,
                             shape, dtype
    inputs.safetensors       input ids, input targets; step {s} ids/targets/mask <site>;
                             generate prompt; filter logits; data token ids
    weights.safetensors      weight <state_dict key> (the book's names, docs/conventions.md)
    forward.safetensors      trf_blocks.{i}.{norm1,att,norm2,ff} output, trf_blocks.{i} output, logits
    backward.safetensors     loss, grad <key> (eval mode: no dropout)
    step-{s}.safetensors     step {s} loss, lr, grad norm (before clipping), and param/adam m/adam v
                             <key> @ step {s} after appendix D's step (schedule, clipping, AdamW)
    generation.safetensors   generate step {j} logits (KV cache), generate tokens (KV cache);
                             filter <setting>: kept tokens / probabilities
    data.safetensors         data <windows>: inputs / targets / batch sizes
    components.safetensors   layer_norm x/scale/shift/dout -> layer_norm out/dx/dscale/dshift

Each file is written as soon as its tensors exist, so memory holds one group at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from npgpt.config import GPTConfig
from npgpt.data import embedded_text
from npgpt.errors import NpgptError
from npgpt.layers import layer_norm
from npgpt.tokenizer import get_tokenizer
from parity.adapters import TIED, NumpyImpl
from parity.engine import (
    FILTERS,
    GENERATED,
    WINDOWS,
    ZERO_GRADIENT,
    Progress,
    RandomWeights,
    Run,
    Schedule,
    draw_ids,
    outputs_of,
    prompt_of,
)
from parity.outputs import STATE, kind_of, state_key
from parity.report import Report
from parity.tolerances import TABLE, compare, tolerance

LR, WEIGHT_DECAY, BETAS, EPS = 4e-4, 0.1, (0.9, 0.999), 1e-8
WINDOW_FIELDS = ("batch_size", "max_length", "stride", "drop_last")  # of each entry of WINDOWS
SCHEDULE = Schedule(peak_lr=LR)  # appendix D's warmup + cosine and clipping, as in npgpt check
MANIFEST = "manifest.json"
FORMAT = "npgpt-golden-v2"  # v2: appendix D's schedule in the steps; generation, filter and data outputs


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise NpgptError("golden bundles are safetensors files; pip install 'npgpt[hf]'") from None
    return safetensors.numpy


def write(
    out: str | Path,
    config: str = "tiny",
    steps: int = 3,
    seed: int = 0,
    batch_size: int = 2,
    seq_len: int = 16,
    drop_rate: float = 0.1,
    vocab_size: int | None = None,
    tied: bool = False,
) -> Path:
    """Run the reference and write a bundle into ``out`` (a new or empty directory). ``tied``: the
    output head IS the token embedding (GPT-2 as OpenAI trained it; picoGPT, llm.c): no
    ``out_head.weight`` anywhere, its gradient summed into ``tok_emb.weight``'s, one AdamW state."""
    st = _safetensors()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        killed = out.is_dir() and not (out / MANIFEST).exists() and (out / "inputs.safetensors").exists()
        hint = " (it looks like a bundle whose write was stopped: no manifest.json; delete it to write again)"
        raise NpgptError(
            f"{out} exists and is not an empty directory{hint if killed else ''}; choose a new directory for the bundle"
        )
    extra = {} if vocab_size is None else {"vocab_size": vocab_size}
    cfg = GPTConfig.preset(config, qkv_bias=True, drop_rate=drop_rate, **extra)
    if seq_len > cfg.context_length:
        raise NpgptError(f"--seq-len {seq_len} exceeds context_length={cfg.context_length}")
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, dict[str, Any]] = {}

    def save(file: str, role: str, group: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None = None) -> None:
        """One file; ``outputs``, if given, are written beside ``group`` with the role "output"."""
        roles = {k: role for k in group} | {k: "output" for k in outputs or {}}
        arrays = {k: _contiguous(v) for k, v in {**group, **(outputs or {})}.items()}
        st.save_file(arrays, str(out / file))
        for k, v in arrays.items():
            tensors[k] = {"file": file, "role": roles[k], "shape": list(v.shape), "dtype": str(v.dtype)}

    rng = np.random.default_rng(seed)
    ids, targets = (
        draw_ids(rng, cfg.vocab_size, (batch_size, seq_len)),
        draw_ids(rng, cfg.vocab_size, (batch_size, seq_len)),
    )
    weights = RandomWeights(cfg, seed)  # made tensor by tensor when read: no third copy in memory
    keys = [k for k in weights if not (tied and k == TIED)]  # tied: the head is tok_emb.weight itself
    save("weights.safetensors", "input", {f"weight {k}": weights[k] for k in keys})
    run = Run(cfg, weights, ids, targets, np.dtype(np.float64), steps, seed, LR, WEIGHT_DECAY, None, None)
    inputs = {"input ids": ids, "input targets": targets, "generate prompt": prompt_of(ids)}
    for s, (step_ids, step_targets, masks) in enumerate(run.batches(), start=1):
        inputs[f"step {s} ids"], inputs[f"step {s} targets"] = step_ids, step_targets
        for site, mask in (masks or {}).items():
            inputs[f"step {s} mask {site}"] = mask.astype(np.uint8)
    inputs["data token ids"] = np.array(get_tokenizer().encode(embedded_text()), dtype=np.int64)
    ref = NumpyImpl(tied=tied)
    ref.set_schedule(SCHEDULE, steps)
    group: dict[str, np.ndarray] = {}
    file = ""
    for name, tensor in outputs_of(ref, run, Progress(lambda msg: None), every_step=True):  # engine's one walk
        if _file_of(name) != file and group:
            save(file, "output", group)
            group = {}
        file = _file_of(name)
        group[name] = tensor
        if name == "logits":  # the sampling filters' input (B, V), as the engine filters it
            inputs["filter logits"] = tensor[:, -1, :].astype(np.float64)
            save("inputs.safetensors", "input", inputs)
        if name.startswith(f"{STATE[-1]} {keys[-1]} @ step "):  # a step's last row: written before the next
            save(file, "output", group)  # step updates these arrays in place
            group = {}
    if group:
        save(file, "output", group)
    del group
    ref.release()
    component = _layer_norm_inputs(cfg, seed)
    save("components.safetensors", "input", component, _layer_norm_outputs(component))
    manifest = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "preset": config,
        "seed": seed,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "optimizer": {"name": "AdamW (torch.optim.AdamW semantics)", "lr": LR, "weight_decay": WEIGHT_DECAY,
                      "betas": list(BETAS), "eps": EPS},
        "schedule": {**dataclasses.asdict(SCHEDULE), "total_steps": steps,
                     "rule": "step t (from 0): lr = initial + t*(peak - initial)/warmup while t < warmup, else "
                             "min + (peak - min)*0.5*(1 + cos(pi*(t - warmup)/(total - warmup))); the gradients' "
                             "global norm is clipped to max_norm before AdamW"},
        "generation": {"tokens": GENERATED, "rule": "greedy (argmax) continuation of generate prompt",
                       "filters": [{"temperature": t, "top_k": k if k is None else min(k, cfg.vocab_size), "top_p": p}
                                   for t, k, p in FILTERS]},
        "data": {"windows": [dict(zip(WINDOW_FIELDS, w, strict=True)) for w in WINDOWS],
                 "rule": "GPTDatasetV1 windows of data token ids, batched in order (no shuffle)"},
        "layout": "the book's GPTModel.state_dict() names (docs/conventions.md); dropout sites in forward order",
        "tied": tied,
        "tied_rule": "logits = x @ tok_emb.weight.T; there is no out_head.weight; grad, param and AdamW moments of "
                     "tok_emb.weight cover both uses (the two gradients summed)" if tied else None,
        "dropout": "train-mode steps multiply by the step's keep masks, scaled by 1/(1 - drop_rate)",
        "tolerances": {f"{d} {k}": {"rtol": t.rtol, "atol": t.atol, "norm": t.norm} for (d, k), t in TABLE.items()},
        "versions": _versions(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tensors": tensors,
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


def verify(bundle: str | Path, results: str | Path) -> Report:
    """Compare an implementation's outputs (same names as the bundle's outputs; a .safetensors
    or .npz file, or a directory of .safetensors files) with the bundle's. Every output the
    results hold is compared with the tolerance table at the results' precision (float32 when any
    float output is float32, else float64); outputs they do not hold are counted in a note (a C
    program may check one component)."""
    st = _safetensors()
    from safetensors import safe_open

    bundle = Path(bundle)
    tensors = read_manifest(bundle)["tensors"]
    got = _open_results(Path(results), st)
    outputs = [name for name, meta in tensors.items() if meta["role"] == "output"]
    provided = [name for name in outputs if name in got]
    if not provided:
        some = ", ".join(sorted(got)[:3]) or "nothing"
        raise NpgptError(
            f"{results} holds none of the bundle's {len(outputs)} output names (it has {some}); "
            f"name them as in {bundle / MANIFEST}, e.g. {outputs[0]!r}"
        )
    # the results' precision: float32 if any float output is (a float32 implementation's loss written as a
    # Python float is still a float32 result), and every row is held to that precision's tolerances
    floats = {np.asarray(got[name]).dtype for name in provided if kind_of(name) != "exact"}
    precision = np.dtype(np.float32) if np.dtype(np.float32) in floats else np.dtype(np.float64)
    rows = []
    opened: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for name in provided:
            actual = np.asarray(got[name])
            exact = kind_of(name) == "exact"
            if exact and actual.dtype.kind in "iub":  # token ids, masks, windows: compared as numbers
                actual = actual.astype(np.float64)
            if actual.dtype not in (np.float32, np.float64):
                raise NpgptError(f"{results}: {name!r} is {actual.dtype}; outputs must be float32 or float64")
            if precision == np.float32 and kind_of(name) == "state" and name.split(" @ ")[0].endswith(ZERO_GRADIENT):
                continue  # AdamW follows round-off there in float32 (parity/engine.py, ZERO_GRADIENT)
            file = tensors[name]["file"]
            if file not in opened:  # each bundle file opened once, memory-mapped: one tensor read at a time
                opened[file] = stack.enter_context(safe_open(str(bundle / file), framework="np"))
            expected = opened[file].get_tensor(name).astype(np.float64) if exact else opened[file].get_tensor(name)
            if actual.shape != expected.shape and actual.size == expected.size == 1:
                actual = actual.reshape(expected.shape)  # a scalar written as [1] or []
            tol = tolerance(precision, kind_of(name))
            rows.append(compare(name, actual, expected.astype(actual.dtype), tol))
    notes = []
    if len(provided) < len(outputs):
        notes.append(f"{len(outputs) - len(provided)} of the bundle's {len(outputs)} outputs were not in {results}")
    unknown = [n for n in got if n not in tensors]
    if unknown:
        notes.append(f"{len(unknown)} tensors in {results} are not bundle outputs (ignored), e.g. {unknown[0]!r}")
    if len(floats) > 1:
        notes.append(
            f"the results mix {' and '.join(sorted(f.name for f in floats))}: every row is held to "
            f"{precision.name}'s tolerances"
        )
    return Report(precision.name if floats else "exact", rows, notes)


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    bundle = Path(bundle)
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        manifest["tensors"], manifest["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NpgptError(f"{bundle} is not a golden bundle ({exc}); write one with npgpt golden write") from None
    return manifest


def _open_results(path: Path, st: Any) -> dict[str, np.ndarray]:
    if not path.exists():
        raise NpgptError(f"{path} does not exist; give the .safetensors/.npz file your implementation wrote")
    try:
        if path.is_dir():
            found: dict[str, np.ndarray] = {}
            for file in sorted(path.glob("*.safetensors")):
                found.update(st.load_file(str(file)))
            return found
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return st.load_file(str(path))
    except Exception as exc:  # a truncated or damaged file: safetensors raises its own SafetensorError
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise NpgptError(f"{path}: cannot read it as safetensors/npz ({type(exc).__name__}: {first})") from None


def _file_of(name: str) -> str:
    """The bundle file an output goes into (the module docstring's list)."""
    if name.startswith("data "):
        return "data.safetensors"
    if name.startswith(("generate ", "filter ")):
        return "generation.safetensors"
    if name == "loss" or name.startswith("grad "):
        return "backward.safetensors"
    if name.startswith("step ") or state_key(name) is not None:
        return f"step-{name.split()[1] if name.startswith('step ') else name.rsplit(' @ step ', 1)[1]}.safetensors"
    return "forward.safetensors"  # block and sub-layer outputs, logits


def _contiguous(value: Any) -> np.ndarray:
    """An array safetensors can write, without a copy when it already is one (scalars stay 0-d)."""
    a = np.asarray(value)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _layer_norm_inputs(cfg: GPTConfig, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 7])
    C = cfg.emb_dim
    return {
        "layer_norm x": rng.standard_normal((3, C)),
        "layer_norm scale": 1.0 + 0.2 * rng.standard_normal(C),
        "layer_norm shift": 0.1 * rng.standard_normal(C),
        "layer_norm dout": rng.standard_normal((3, C)),
    }


def _layer_norm_outputs(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, cache = layer_norm.forward(inputs["layer_norm x"], inputs["layer_norm scale"], inputs["layer_norm shift"])
    dx, dscale, dshift = layer_norm.backward(inputs["layer_norm dout"], cache)
    return {"layer_norm out": out, "layer_norm dx": dx, "layer_norm dscale": dscale, "layer_norm dshift": dshift}


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("npgpt", "safetensors"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found
