"""``npgpt download`` and ``npgpt convert``: OpenAI's GPT-2 weights onto disk, and between formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from npgpt.errors import NpgptError
from parity.cli.runs import DefaultsHelp, Runner, examples
from parity.download import SIZES, SOURCES
from parity.weights import FORMATS


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Runner]:
    fmt = {"formatter_class": DefaultsHelp}
    p = sub.add_parser(
        "download",
        help="download OpenAI's GPT-2 weights (resumable, size- and hash-checked)",
        epilog=examples(
            "npgpt download 124M                         # into models/124M, then: npgpt check --weights models/124M",
            "npgpt download 124M --source hf             # Hugging Face's safetensors instead",
            "npgpt download 355M --base-url https://my.mirror/gpt-2",
        ),
        **fmt,
    )
    p.add_argument("model_size", choices=SIZES)
    p.add_argument("--source", choices=SOURCES, default="openai", help="openai TF checkpoint or HF safetensors")
    p.add_argument("--models-dir", default="models", help="the weights go into MODELS_DIR/MODEL_SIZE")
    p.add_argument("--base-url", default=None, help="a mirror serving the same paths (default: the book's URLs)")
    formats = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    c = sub.add_parser(
        "convert",
        help=f"convert weights between {', '.join(FORMATS)}",
        description=formats,
        epilog=examples(
            "npgpt convert models/124M gpt2-124M.npz          # OpenAI's checkpoint -> npgpt's (generate reads it)",
            "npgpt convert gpt2-124M.npz gpt2-124M.safetensors",
            "npgpt convert runs/npgpt/checkpoint.npz model.pth --format pth",
        ),
        **fmt,
    )
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--format", choices=list(FORMATS), default=None, help="default: from DST")
    c.add_argument("--force", action="store_true", help="replace an existing DST regular file (never a directory)")
    c.add_argument(
        "--allow-nonfinite", action="store_true", help="convert weights that hold NaN or inf (refused by default)"
    )
    return {"download": run_download, "convert": run_convert}


def run_download(args: argparse.Namespace) -> int:
    from parity.download import download

    folder = download(args.model_size, args.models_dir, args.source, args.base_url)
    print(f"{folder}: ready (npgpt check --weights {folder})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from parity.weights import check_destination, check_finite, load_weights, save_weights

    src, dst = Path(args.src).resolve(), Path(args.dst).resolve()
    if src == dst or dst in src.parents:
        raise NpgptError(f"DST {args.dst} is SRC or contains it; write the converted weights somewhere else")
    check_destination(dst, args.force)  # before the (possibly slow) load
    cfg, params = load_weights(args.src)
    if not args.allow_nonfinite:
        check_finite(params, args.src, "pass --allow-nonfinite to convert them anyway")
    out = save_weights(args.dst, cfg, params, args.format, overwrite=args.force)
    n = sum(v.size for v in params.values())
    print(f"{args.src} -> {out}: {len(params)} tensors, {n:,} numbers ({cfg.n_layers} layers, emb {cfg.emb_dim})")
    return 0
