"""The book's loss plot (figure 5.12), shared by npgpt and torchgpt. Needs matplotlib."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_losses(
    epochs_seen: Sequence[float],
    tokens_seen: Sequence[int],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    path: str | Path | None = None,
) -> Path | None:
    """Train and validation loss against epochs, with tokens seen on a second x-axis.

    Saves a PNG to ``path`` (or shows the figure when None). Returns the path, or None when
    matplotlib (the ``plot`` extra) is not installed.
    """
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax1 = plt.subplots(figsize=(5, 3))
    marker = "o" if len(epochs_seen) < 20 else None  # a single evaluation is a point, not an empty line
    ax1.plot(epochs_seen, train_losses, marker=marker, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", marker=marker, label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()
    ax2.plot(tokens_seen, train_losses, alpha=0)  # invisible: aligns the tokens axis
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    if path is None:
        plt.show()
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
