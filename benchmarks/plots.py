"""PNG plots of benchmark results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def dice_vs_k(rows: list[dict], path: Path, title: str) -> Path:
    """Dice against K per method: one row of panels per task, box-prompted left, prompt-free right."""
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False)
    for t, task in enumerate(tasks):
        for c, metric in enumerate(("dice_box", "dice_auto")):
            ax = axes[t][c]
            for method in sorted({r["method"] for r in rows if r["task"] == task}):
                pts = sorted((r["K"], r[metric], r.get(f"{metric}_std", 0.0)) for r in rows
                             if r["task"] == task and r["method"] == method and r.get(metric) is not None)
                if not pts:
                    continue
                if method == "zero_shot":
                    ax.axhline(pts[0][1], linestyle="--", color="grey", label="zero-shot")
                    continue
                ks, ys, es = zip(*pts, strict=True)
                ax.errorbar(ks, ys, yerr=es, marker="o", capsize=3, label=method)
            ax.set_xticks(sorted({r["K"] for r in rows if r["task"] == task and r["K"] > 0}))
            ax.set_title(f"{task}: {'box prompt' if metric == 'dice_box' else 'no prompt'}")
            ax.set_xlabel("K labelled cases / slice sets")
            ax.set_ylabel("Dice")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
    return save(fig, path, title)


def save(fig, path: Path, title: str | None = None, dpi: int = 100) -> Path:
    """Title, lay out, write and close a figure: the last steps every benchmark plot shares."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def bars(values: dict[str, float], path: Path, title: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, len(values) * 0.9), 4))
    ax.bar(list(values), list(values.values()))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    return save(fig, path)
