"""Turn the workers' rows into the result files: ratios between implementations, the
markdown table (benchmarks/results/<machine>.md) and the plot (.png)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.cost_model import PRESETS, train_bytes_on_paper
from npgpt.config import GPTConfig


def with_ratios(results: dict) -> None:
    """numpy / torch-cpu time ratio for matching rows (fp32 eager torch), and npgpt's peak
    memory against the on-paper count."""
    np_rows = results["workers"].get("numpy-cpu", {}).get("rows", [])
    for r in np_rows:
        cfg = GPTConfig.preset(
            PRESETS[r["config"]], context_length=max(r["T"], 1024 if r["config"] != "tiny" else r["T"])
        )
        r["paper_bytes"] = train_bytes_on_paper(cfg, r["B"], r["T"])
        if r["peak_bytes"]:
            r["peak_over_paper"] = r["peak_bytes"] / r["paper_bytes"]
    t_rows = results["workers"].get("torch-cpu", {}).get("rows", [])
    index = {(r["config"], r["B"], r["T"]): r for r in t_rows if r["mode"] == "fp32"}
    for r in np_rows:
        t = index.get((r["config"], r["B"], r["T"]))
        if t:
            r["forward_ratio_vs_torch_cpu"] = r["forward_s"] / t["forward_s"]
            r["train_ratio_vs_torch_cpu"] = r["train_s"] / t["train_s"]


def to_markdown(results: dict) -> str:
    m = results["machine"]
    gpu = ""
    if "gpu" in m:  # a CPU-only run on a GPU machine's host says whose host it was
        gpu = f", {m['gpu']}" if "torch-cuda" in results["workers"] else f" (the host of a {m['gpu']} machine)"
    lines = [f"# npgpt bench — {m['cpu']}, {m['cores']} cores{gpu} ({results['date']})", ""]
    for impl, w in results["workers"].items():
        ceil = ", ".join(
            f"{k.replace('_matmul_flops', '')} matmul {v / 1e9:.1f} GFLOP/s"
            if "flops" in k
            else f"memory {v / 1e9:.1f} GB/s"
            for k, v in w["ceiling"].items()
        )
        lines.append(f"- **{impl}** ceiling: {ceil}")
    lines += [
        "",
        "| impl | mode | model | B×T | fwd tok/s | fwd % peak | train step s | train tok/s | train MFU | peak mem GB"
        " | peak / on paper | numpy/torch-cpu step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for impl, w in results["workers"].items():
        for r in w["rows"]:
            ratio = r.get("train_ratio_vs_torch_cpu")
            peak = f"{r['peak_bytes'] / 1e9:.2f}" if r["peak_bytes"] else "—"
            paper = f"{r['peak_over_paper']:.2f}×" if "peak_over_paper" in r else "—"
            lines.append(
                f"| {impl} | {r['mode']} | {r['config']} | {r['B']}×{r['T']} | {r['forward_tok_s']:,.0f} | "
                f"{100 * r['forward_frac']:.0f}% | {r['train_s']:.3f} | {r['train_tok_s']:,.0f} | "
                f"{100 * r['train_frac']:.0f}% | {peak} | {paper} | {f'{ratio:.2f}×' if ratio else '—'} |"
            )
    if any(w["generation"] for w in results["workers"].values()):
        lines += [
            "",
            "| impl | model | new tokens | KV cache tok/s | no cache tok/s | speed-up |",
            "|---|---|---|---|---|---|",
        ]
    for impl, w in results["workers"].items():
        for g in w["generation"]:
            lines.append(
                f"| {impl} | {g['config']} | {g['new_tokens']} | {g['cached_tok_s']:.1f} | {g['uncached_tok_s']:.1f} | "
                f"{g['speedup']:.1f}× |"
            )
    lines += [""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    """Train step time vs T (124M) and vs model size (T=256), numpy vs torch: where T^2 bites.
    A GPU run instead gets train tokens/s per mode at T=1024, labelled with MFU."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    if "torch-cuda" in results["workers"] and len(results["workers"]) == 1:
        _plot_gpu(results, path, plt)
        return True
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for impl, w in results["workers"].items():
        for mode in sorted({r["mode"] for r in w["rows"]}):
            rows = [r for r in w["rows"] if r["mode"] == mode]
            label = impl if mode == "fp32" else f"{impl} {mode}"
            by_t = sorted((r["T"], r["train_s"] / r["B"]) for r in rows if r["config"] == "124M")
            if by_t:
                ax1.plot(*zip(*by_t, strict=True), marker="o", label=label)
            sizes = {"tiny": 0, "124M": 1, "355M": 2}
            by_size = sorted((sizes[r["config"]], r["train_s"] / r["B"]) for r in rows if r["T"] == 256)
            if by_size:
                ax2.plot(*zip(*by_size, strict=True), marker="o", label=label)
    ax1.set(xscale="log", yscale="log", xlabel="T (tokens per sequence)", ylabel="train step s per sequence",
            title="GPT-2 124M: step time vs T")  # fmt: skip
    ax1.set_xticks([128, 256, 1024], ["128", "256", "1024"])
    ax2.set(yscale="log", xlabel="model", title="step time vs size (T=256)")
    ax2.set_xticks([0, 1, 2], ["tiny", "124M", "355M"])
    for axis in (ax1.xaxis, ax1.yaxis, ax2.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    fig.suptitle(f"{results['machine']['cpu']} ({results['machine']['cores']} cores)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_gpu(results: dict, path: Path, plt) -> None:
    rows = [r for r in results["workers"]["torch-cuda"]["rows"] if r["T"] == 1024]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    sizes = list(dict.fromkeys(r["config"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(sizes)
    for j, size in enumerate(sizes):
        for i, mode in enumerate(modes):
            r = next((r for r in rows if r["mode"] == mode and r["config"] == size), None)
            if r is None:
                continue
            x = i + (j - (len(sizes) - 1) / 2) * width
            ax.bar(x, r["train_tok_s"] / 1e3, width, color=f"C{j}", label=size if i == 0 else None)
            ax.annotate(f"{100 * r['train_frac']:.0f}%", (x, r["train_tok_s"] / 1e3), ha="center", va="bottom",
                        fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(modes)), modes)
    ax.set(ylabel="train tokens/s (thousands)", title="GPT-2 train step at T=1024 (label: MFU vs measured ceiling)")
    ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']['gpu']}, torch {results['machine'].get('torch', '')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
