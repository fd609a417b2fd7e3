"""Error of each torch fast path against the float64 NumPy reference, on a GPU (parity/precision.py
says what is measured and the criterion). Several seeds, so the ratio the GPU test's MULTIPLE is
checked against is a spread, not one draw.

    python -m benchmarks.gpu_precision [--config gpt2-small --batch-size 4 --seq-len 256 --seeds 0 1 2]

Writes benchmarks/results/gpu-<name>-precision.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from npgpt.config import GPTConfig
from parity.engine import random_params
from parity.precision import METRICS, MULTIPLE, VARIANTS, Variant, measure, to_markdown


def write(result: dict, out_dir: str) -> tuple[Path, str]:
    """Write ``result`` (device, torch, date, config, batch, seeds) as JSON and Markdown, with the
    largest ratio of each variant over the seeds: the spread MULTIPLE is held against."""
    names = list(dict.fromkeys(r["variant"] for s in result["seeds"] for r in s["rows"]))
    worst = {
        name: {
            m: max(r["ratio"][m] for s in result["seeds"] for r in s["rows"] if r["variant"] == name) for m in METRICS
        }
        for name in names
    }
    result = {**result, "multiple": MULTIPLE, "max_ratio_over_seeds": worst}
    gpu = result["device"]
    stem = Path(out_dir) / (("gpu-" + gpu.replace(" ", "-") if gpu != "cpu" else "cpu") + "-precision")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    B, T = result["batch"]
    md = [
        f"# Fast paths against the float64 NumPy reference — {gpu}, torch {result['torch']} ({result['date']})",
        "",
        f"GPT-2 {result['config']['emb_dim']}-wide, {result['config']['n_layers']} layers, random weights, B={B}, "
        f"T={T}, eval mode; errors are ||x − x_f64|| / ||x_f64||. A variant passes when each error is at most "
        f"{MULTIPLE:g}× the book eager path's at the same precision, for the logits, the gradients (as one "
        "vector) and the worst gradient tensor; the loss is reported, not judged (parity/precision.py).",
        "",
    ]
    for s in result["seeds"]:
        md += [f"## seed {s['seed']}", "", to_markdown(s["rows"])]
    md += ["## largest ratio to the book path over the seeds (logits / loss / grads / worst tensor)", ""]
    md += [f"- {name}: " + " / ".join(f"{w[m]:.2f}" for m in METRICS) for name, w in worst.items()]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    return stem, "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="gpt2-small")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine the seeds of earlier runs' files, run nothing")
    args = p.parse_args(argv)
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        stem, md = write({**runs[0], "seeds": [s for r in runs for s in r["seeds"]]}, args.out)
        print(md)
        return 0

    import torch

    cfg = GPTConfig.preset(args.config, qkv_bias=True, drop_rate=0.0)
    cfg = dataclasses.replace(cfg, context_length=max(cfg.context_length, args.seq_len))
    variants = [v for v in VARIANTS if not (args.no_compile and v.compiled)]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device.startswith("cuda") else "cpu"
    result = {
        "device": gpu,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "config": cfg.to_dict(),
        "batch": [args.batch_size, args.seq_len],
        "seeds": [],
    }
    per_seed = result["seeds"]
    for seed in args.seeds:
        t0 = time.perf_counter()
        params = random_params(cfg, seed)
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, cfg.vocab_size, (args.batch_size, args.seq_len))
        ids[:, 1::7] = ids[:, :1]  # repeated token ids: the embedding's scatter-add must add
        targets = rng.integers(0, cfg.vocab_size, (args.batch_size, args.seq_len))
        rows = measure(cfg, params, ids, targets, args.device, variants)
        per_seed.append({"seed": seed, "rows": rows})
        print(f"seed {seed}: {time.perf_counter() - t0:.1f} s\n{to_markdown(rows)}", file=sys.stderr, flush=True)
        write(result, args.out)  # after every seed: a run cut short keeps what it measured

    stem, md = write(result, args.out)
    print(md)
    print(f"wrote {stem}.json, .md")
    ok = all(r["ok"] for s in per_seed for r in s["rows"] if r["variant"] != Variant(r["precision"]).name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
