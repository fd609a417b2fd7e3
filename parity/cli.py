"""The ``npgpt`` console script: train, generate and demo with ``--impl numpy|torch``.

It lives here, at the top of the dependency graph, because it reaches both implementations;
torch is imported only when ``--impl torch`` asks for it, so a core install (NumPy only) runs
every NumPy command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from npgpt import cli as np_cli
from npgpt.errors import NpgptError


def _add_impl_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", choices=["numpy", "torch"], default="numpy", help="implementation (default numpy)")
    p.add_argument("--device", default="auto", help="torch only: auto|cpu|cuda|mps (default auto)")


def _torch_cli():
    try:
        from torchgpt import cli as torch_cli
    except ImportError as exc:
        if exc.name == "torch":
            raise NpgptError("--impl torch needs PyTorch; pip install 'npgpt[torch]'") from None
        raise
    return torch_cli


def _dispatch(name: str):
    def run(args: argparse.Namespace) -> int:
        if args.impl == "numpy":
            return getattr(np_cli, f"run_{name}")(args)
        return getattr(_torch_cli(), f"run_{name}")(args)

    return run


def _demo(args: argparse.Namespace) -> int:
    if args.impl == "numpy":
        return np_cli.run_demo(args)
    torch_cli = _torch_cli()
    return np_cli.run_demo(args, torch_cli.run_train, torch_cli.run_generate, torch_cli.CHECKPOINT)


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = np_cli.build_parser(_add_impl_args)
    args = parser.parse_args(argv)
    runners = {"train": _dispatch("train"), "generate": _dispatch("generate"), "demo": _demo}
    return np_cli.run_command(args, runners)


if __name__ == "__main__":
    sys.exit(main())
