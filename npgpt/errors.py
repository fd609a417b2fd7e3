"""The one exception type users see from npgpt: a one-line message naming the problem and the fix."""


class NpgptError(ValueError):
    """Bad input or state. The message is one line: what is wrong, then what to do about it."""


def diverged(what: str, value: float, step: int, checkpoint: str | None, kept_step: int | None) -> NpgptError:
    """The one message for a run that went non-finite: where, what, and which checkpoint is kept."""
    if checkpoint is None:
        kept = "no checkpoint is written for this run"
    elif kept_step is None:
        kept = f"nothing was saved to {checkpoint} (no good state to keep)"
    else:
        kept = f"{checkpoint} from step {kept_step} is kept, unchanged"
    return NpgptError(
        f"{what} became {value} at step {step}; stopped without saving, {kept}; "
        "resume the kept checkpoint with a lower lr or with clipping (npgpt train --resume --override lr=... or "
        "--override grad_clip=1.0), or start again with a lower --lr"
    )
