"""``npgpt golden write`` and ``npgpt golden verify``: the reference's inputs, weights and outputs on
disk for implementations in any language (parity/golden.py, docs/golden.md)."""

from __future__ import annotations

import argparse

from parity.cli.runs import DefaultsHelp, Runner, examples


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Runner]:
    fmt = {"formatter_class": DefaultsHelp}
    p = sub.add_parser("golden", help="write or verify a golden bundle (float64 inputs, weights, every output)", **fmt)
    verbs = p.add_subparsers(dest="verb", required=True)
    w = verbs.add_parser(
        "write",
        help="run the NumPy reference and write a bundle into DIR",
        epilog=examples(
            "npgpt golden write golden/                       # tiny, 3 steps: 15 MB, seconds",
            "npgpt golden write golden-tied/ --tied           # a head tied to the embedding (picoGPT, llm.c)",
            "npgpt golden write golden-124M/ --config gpt2-small --steps 1",
        ),
        **fmt,
    )
    w.add_argument("dir", help="a new (or empty) directory")
    w.add_argument("--config", default="tiny", help="tiny|gpt2-small|... (gpt2-small: ~4 GB on disk per step)")
    w.add_argument("--steps", type=int, default=3, help="AdamW steps; params, m and v are written after each")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--batch-size", type=int, default=2, help="sequences per batch")
    w.add_argument("--seq-len", type=int, default=16, help="tokens per sequence")
    w.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="override the preset's vocabulary (gpt2-small: 50257; tiny: 512, a 15 MB bundle)",
    )
    w.add_argument(
        "--tied",
        action="store_true",
        help="the output head is the token embedding (picoGPT, llm.c): no out_head.weight, gradients summed",
    )
    v = verbs.add_parser(
        "verify",
        help="compare an implementation's outputs with a bundle (exit 1 on mismatch)",
        epilog=examples(
            "npgpt golden verify golden/ my_outputs.safetensors",
            "npgpt golden verify golden/ my_outputs.npz --quiet",
            "npgpt golden verify golden/ outputs_dir/ --json report.json",
        ),
        **fmt,
    )
    v.add_argument("dir", help="the bundle")
    v.add_argument("results", help="your outputs: .safetensors or .npz (or a directory of .safetensors), same names")
    v.add_argument("--quiet", action="store_true", help="one line per component instead of one per tensor")
    v.add_argument("--json", help="also write every row to this JSON file (npgpt check's schema)")
    return {"golden": run}


def run(args: argparse.Namespace) -> int:
    from npgpt.validate import check_values
    from parity import golden
    from parity.cli.reports import check_report_path, print_report, write_json

    if args.verb == "write":
        check_values(vars(args))
        out = golden.write(
            args.dir, args.config, args.steps, args.seed, args.batch_size, args.seq_len, vocab_size=args.vocab_size,
            tied=args.tied,
        )  # fmt: skip
        print(
            f"{out}: golden bundle written (manifest.json lists every tensor); "
            f"check your outputs with: npgpt golden verify {out} RESULTS"
        )
        return 0
    check_report_path(args.json)
    report = golden.verify(args.dir, args.results)
    print_report(report, report.dtype, None, args.quiet)
    if args.json:
        manifest = golden.read_manifest(args.dir)
        write_json(args.json, manifest["config"], str(args.results), f"golden bundle {args.dir}", [report])
    return 0 if report.ok else 1
