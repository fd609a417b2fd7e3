"""Replay the start of `npgpt train --text the-verdict.txt` (chapter 5: GPT_CONFIG_124M at context
256, seed 123, AdamW 4e-4, dropout 0.1) in npgpt and in the book's torch model, with the same
initial weights, batches and dropout masks, and print both losses at every step.

    python -m benchmarks.verdict_parity [--steps 22]

Writes benchmarks/results/verdict_parity.txt. It answers one question about the README's loss
plot: is the loss spike near step 20 npgpt's doing, or the run's dynamics?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from npgpt import AdamW, GPTConfig, GPTModel, create_dataloader_v1, train_val_split
from npgpt.layers.gpt_model import dropout_sites
from parity.adapters import TorchImpl

VERDICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "the-verdict.txt"
OUT = Path(__file__).resolve().parent / "results" / "verdict_parity.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=22)
    parser.add_argument("--text", default=str(VERDICT))
    args = parser.parse_args()
    if not Path(args.text).is_file():
        print(f"{args.text} not found; pass --text", file=sys.stderr)
        return 2
    cfg = GPTConfig.preset("gpt2-small", context_length=256)  # what `npgpt train` builds
    model = GPTModel(cfg, seed=123)  # seed 123: the same weights and dropout RNG as the CLI run
    ref = TorchImpl()
    ref.load(cfg, model.params, np.dtype(np.float32))
    ref.init_optimizer(4e-4, 0.1, (0.9, 0.999), 1e-8)
    optimizer = AdamW(model.params, lr=4e-4, weight_decay=0.1)
    train_text, _ = train_val_split(Path(args.text).read_text(encoding="utf-8"))
    loader = create_dataloader_v1(train_text, 2, 256, 256, shuffle=True, drop_last=True, seed=123)
    lines = ["step  npgpt loss  torch loss  |diff|"]
    step = 0
    for epoch in range(10):
        for ids, targets in loader.batches(epoch):
            loss, grads = model.loss_and_grads(ids, targets)  # train mode: masks from the model's RNG
            masks = {site: model.last_masks[site] for site in dropout_sites(cfg)}
            t_loss, _ = ref.loss_and_grads(ids, targets, masks)
            optimizer.step(grads)
            ref.optimizer_step()
            lines.append(f"{step:4d}  {loss:10.5f}  {t_loss:10.5f}  {abs(loss - t_loss):.1e}")
            print(lines[-1], flush=True)
            step += 1
            if step >= args.steps:
                OUT.parent.mkdir(exist_ok=True)
                OUT.write_text("\n".join(lines) + "\n")
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
