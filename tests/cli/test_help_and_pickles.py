"""Small traps from the reliability trial: a default of 0 hidden in --help, demo's --help naming
train's folder, a malicious pickle reported as 'corrupt' on the pinned torch."""

from __future__ import annotations

import os

import pytest

from parity.cli import main


def help_of(capsys, command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_a_default_of_zero_and_the_demos_own_folder(capsys):
    assert "linear warmup steps (appendix D: 20% of them) (default: 0)" in help_of(capsys, "train")
    demo = help_of(capsys, "demo")
    assert "(default: runs/demo)" in demo and "runs/npgpt" not in demo


def test_a_malicious_pickle_is_refused_as_such_not_called_corrupt(tmp_path):
    torch = pytest.importorskip("torch")
    from npgpt.errors import NpgptError
    from torchgpt.checkpoint import load_checkpoint

    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "payload": os.system}, evil)  # a global: code pickle would run
    with pytest.raises(NpgptError, match=r"needs pickle to load .* refused for safety"):
        load_checkpoint(evil)


def test_demo_calls_generate_through_its_own_parser():
    from parity.cli import build_parser
    from parity.cli.training import generate_args

    parser, _, _ = build_parser()
    argv = ["--checkpoint=run/checkpoint.npz", "--prompt=-a prompt that starts with a dash"]
    command = vars(parser.parse_args(["generate", *argv]))
    command.pop("command"), command.pop("debug")
    assert vars(generate_args(argv)) == command  # the same flags and defaults: a new flag needs no demo edit
    assert generate_args(argv).prompt == "-a prompt that starts with a dash"


def _subparsers():
    import argparse

    from parity.cli import build_parser

    _, sub, _ = build_parser()
    stack = [(name, p) for name, p in sub.choices.items()]
    while stack:
        name, p = stack.pop()
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            stack += [(f"{name} {n}", q) for n, q in nested[0].choices.items()]
        else:
            yield name, p


def test_every_subcommand_shows_every_default_and_ends_with_examples_that_parse():
    import argparse
    import shlex

    seen = []
    for name, p in _subparsers():
        text = p.format_help()
        for a in p._actions:
            if a.option_strings and a.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {a.default})" in " ".join(text.split()), (name, a.option_strings)
        assert p.epilog and p.epilog.startswith("examples:"), name
        lines = [line.split("  #")[0].strip() for line in p.epilog.splitlines()[1:]]
        assert 2 <= len(lines) <= 3, name
        for line in lines:
            words = shlex.split(line)
            assert words[0] == "npgpt", line
            if " ".join(words[1 : 1 + len(name.split())]) == name:  # (bugs shows a check line too)
                p.parse_args(words[1 + len(name.split()) :])  # argparse exits on a flag that is not there
        seen.append(name)
    assert sorted(seen) == sorted(
        [
            "train",
            "demo",
            "generate",
            "check",
            "check-book",
            "golden write",
            "golden verify",
            "download",
            "convert",
            "bugs",
        ]
    )
