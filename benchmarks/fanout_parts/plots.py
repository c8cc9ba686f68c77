"""The plots: items/s of every path against items and against workers, where those vary."""

from __future__ import annotations

from pathlib import Path

from .run import Run


def plot(runs: list[Run], results: Path, tag: str) -> list[Path]:
    """items/s against items (one line per path and worker count) and against workers (one line
    per path and item count), one panel per model; only for axes with more than one value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    colors = {"ceiling": "black", "dgaas": "tab:blue", "dgaas_steady": "tab:cyan", "dgaas_warm": "tab:green",
              "naive": "tab:red",
              "parsl_floor": "tab:gray"}
    lines = ["-", "--", ":", "-."]
    models = list(dict.fromkeys(r.model for r in runs))
    for axis, other in (("items", "workers"), ("workers", "items")):
        groups: dict[tuple[str, int], list[Run]] = {}
        for r in runs:
            groups.setdefault((r.model, getattr(r, other)), []).append(r)
        groups = {k: v for k, v in groups.items() if len({getattr(r, axis) for r in v}) > 1}
        if not groups:
            continue
        fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.8), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            mine = [(fixed, rs) for (m, fixed), rs in groups.items() if m == model]
            for i, (fixed, rs) in enumerate(mine):
                rs = sorted(rs, key=lambda r: getattr(r, axis))
                for path, color in colors.items():
                    pts = [(getattr(r, axis), r.rates()[path]) for r in rs]
                    pts = [(x, y) for x, y in pts if y]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), lines[i % len(lines)], marker="o", color=color,
                                label=f"{path}, {other} {fixed}")
            ax.set_title(f"{model}: items/s against {axis}")
            ax.set_xlabel(axis + (" (log)" if axis == "items" else ""))
            ax.set_ylabel("items/s (log)")
            if axis == "items":
                ax.set_xscale("log")
            else:
                ax.set_xticks(sorted({r.workers for r in runs if r.model == model}))
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        path = results / f"{tag}-{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made
