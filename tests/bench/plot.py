"""The benchmark's pictures: results.png (every row of the table, one panel each)
and throughput.png (the MiB/s rows alone, as before).

results.png has one row of panels per kind: throughput (MiB/s), operations
(random reads/s, small files/s, append latency in ms), metadata (ls -l, find,
rm -r, in s). Each panel has one bar per contender: its median, with whiskers
from min to max; a contender that failed gets "FAIL" instead of a bar. A
panel whose values span more than 30 x (the appends: ms against seconds) has
a logarithmic axis, so that the short bars stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"zosfs": "#1f77b4", "s3fs": "#ff7f0e", "s3fs-debian": "#ffbb78", "rclone": "#2ca02c",
          "rclone-debian": "#98df8a", "boto3": "#7f7f7f"}
OPERATIONS = ("rand_4k", "rand_1m", "small_files", "append_256m", "append_1k")
METADATA = ("ls_first", "ls_remount", "ls_index", "find", "rm")
LOG_SPAN = 30.0


def rows(results: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The metrics measured, in rows: throughput, operations (and anything new), metadata."""
    metrics = results["metrics"]
    throughput = [m for m in metrics if m["throughput"]]
    metadata = [m for m in metrics if not m["throughput"] and m["name"] in METADATA]
    operations = [m for m in metrics if not m["throughput"] and m["name"] not in METADATA]
    return [row for row in (throughput, operations, metadata) if row]


def panel(ax: Any, metric: dict[str, Any], names: list[str]) -> None:
    """One metric's bars (median, min-max whiskers) per contender; FAIL where one failed."""
    from tests.bench.report import fmt

    xs, heights, lows, highs, cols = [], [], [], [], []
    failed = []
    for i, name in enumerate(names):
        entry = metric["contenders"].get(name)
        if entry and entry.get("failure"):
            failed.append(i)
        s = entry.get("summary") if entry else None
        if not s:
            continue
        xs.append(i)
        heights.append(s["median"])
        lows.append(s["median"] - s["min"])
        highs.append(s["max"] - s["median"])
        cols.append(COLORS.get(name, "#9467bd"))
    ax.bar(xs, heights, color=cols, yerr=[lows, highs], capsize=3)
    positive = [h for h in heights if h > 0]
    if positive and max(positive) / min(positive) > LOG_SPAN:
        ax.set_yscale("log")
    for x, h, up in zip(xs, heights, highs):
        ax.annotate(fmt(h), (x, h + up), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize=7)
    for x in failed:
        ax.annotate("FAIL", (x, 0), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                    fontsize=8, color="#d62728", fontweight="bold", xycoords=("data", "axes fraction"))
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.margins(y=0.15)
    ax.set_title(metric["title"], fontsize=7.5, wrap=True)
    ax.set_ylabel(f"{metric['unit']} ({'higher' if metric['higher_is_better'] else 'lower'} is better)", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def draw(results: dict[str, Any], panel_rows: list[list[dict[str, Any]]], path: Path) -> None:
    """A figure with one row of panels per entry of `panel_rows`, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["contenders"])
    ncols = max(len(row) for row in panel_rows)
    fig, axes = plt.subplots(len(panel_rows), ncols, figsize=(2.9 * ncols, 3.7 * len(panel_rows)), squeeze=False)
    for axes_row, row in zip(axes, panel_rows):
        for i, ax in enumerate(axes_row):
            if i < len(row):
                panel(ax, row[i], names)
            else:
                ax.axis("off")
    fig.suptitle(f"zosfs benchmark {results['started']} ({results['machine']['cpus']} CPUs, local Ceph RGW)"
                 + (" --quick: not comparable" if results.get("quick") else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, Any], folder: Path) -> None:
    """results.png (every metric) and throughput.png (the MiB/s metrics) in `folder`."""
    panel_rows = rows(results)
    if not panel_rows:
        return
    draw(results, panel_rows, folder / "results.png")
    throughput = [m for m in results["metrics"] if m["throughput"]]
    if throughput:
        draw(results, [throughput], folder / "throughput.png")
