"""The report's figures, as PNG bytes (matplotlib's Agg backend: no display, no network)."""

from __future__ import annotations

import io

import numpy as np

KEEP = "#2f6fdf"
REST = "#9aa5b1"
TOXIC = "#d64545"
INK = "#1f2933"


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#cbd2d9")
    ax.tick_params(colors="#52606d", labelsize=9)
    ax.grid(axis="y", color="#e4e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def utility_histogram(utility: np.ndarray, cutoff: float | None, kept: np.ndarray) -> bytes:
    """Histogram coloured by fate: kept at the cutoff, toxic (< 0), the rest; cutoff line drawn."""
    u = utility[np.isfinite(utility)]
    kept = kept[np.isfinite(utility)]
    fig, ax = _figure(8.0, 3.4)
    if len(u):
        lo, hi = float(u.min()), float(u.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, min(60, max(10, len(u) // 4)) + 1)
        groups = [u[kept], u[~kept & (u >= 0)], u[~kept & (u < 0)]]
        ax.hist(
            groups,
            bins=bins,
            stacked=True,
            color=[KEEP, REST, TOXIC],
            label=["kept at cutoff", "not kept", "toxic (utility < 0)"],
            edgecolor="white",
            linewidth=0.4,
        )
        if lo < 0:
            ax.axvspan(lo, min(0.0, hi), color=TOXIC, alpha=0.07, linewidth=0)
            ax.axvline(0.0, color=TOXIC, linewidth=1, alpha=0.6)
        if cutoff is not None:
            ax.axvline(cutoff, color=INK, linestyle="--", linewidth=1.2)
            ax.annotate(
                f"cutoff {cutoff:.3g}",
                xy=(cutoff, 1),
                xycoords=("data", "axes fraction"),
                xytext=(4, -12),
                textcoords="offset points",
                fontsize=9,
                color=INK,
            )
        ax.legend(frameon=False, fontsize=9, loc="upper left")
    ax.set_xlabel("utility (anchor-loss drop after one step)", fontsize=10, color="#3e4c59")
    ax.set_ylabel("samples", fontsize=10, color="#3e4c59")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def utility_vs_loss(utility: np.ndarray, loss: np.ndarray, kept: np.ndarray) -> bytes:
    """Does the scorer just prefer easy (low-loss) samples? This scatter answers it at a glance."""
    fig, ax = _figure(5.6, 3.8)
    ok = np.isfinite(utility) & np.isfinite(loss)
    u, lo, k = utility[ok], loss[ok], kept[ok]
    size = 14 if len(u) < 2000 else 4
    for mask, colour, label in (
        (~k & (u >= 0), REST, "not kept"),
        (~k & (u < 0), TOXIC, "toxic"),
        (k, KEEP, "kept"),
    ):
        if mask.any():
            ax.scatter(lo[mask], u[mask], s=size, c=colour, alpha=0.75, label=label, linewidths=0)
    if len(u) and u.min() < 0 < u.max():  # the zero line only where it does not squash the data
        ax.axhline(0.0, color="#cbd2d9", linewidth=1)
    ax.set_xlabel("own loss at the proxy (before the step)", fontsize=10, color="#3e4c59")
    ax.set_ylabel("utility", fontsize=10, color="#3e4c59")
    ax.grid(axis="x", color="#e4e7eb", linewidth=0.8)
    if len(u):
        ax.legend(frameon=False, fontsize=9, loc="best")
    return _png(fig)


def _paired_bars(
    groups: list[str], bars: list[tuple[list[float], str, str]], ylabel: str, zero: bool
) -> bytes:
    """One pair of bars per anchor group: `bars` = [(values, colour, label), (values, ...)]."""
    fig, ax = _figure(max(4.5, 0.7 * len(groups) + 2), 3.2)
    x = np.arange(len(groups))
    for offset, (values, colour, label) in zip((-0.2, 0.2), bars, strict=True):
        ax.bar(x + offset, values, width=0.4, color=colour, label=label)
    if zero:
        ax.axhline(0.0, color="#7b8794", linewidth=0.8)
    wide = len(groups) > 5
    ax.set_xticks(x, groups, rotation=30 if wide else 0, ha="right" if wide else "center")
    ax.set_ylabel(ylabel, fontsize=10, color="#3e4c59")
    ax.legend(frameon=False, fontsize=9)
    return _png(fig)


def group_bars(groups: list[str], kept_mean: list[float], rest_mean: list[float]) -> bytes:
    """Mean per-anchor-group utility of kept vs other samples: which topics the subset helps."""
    bars = [(kept_mean, KEEP, "kept"), (rest_mean, REST, "not kept")]
    return _paired_bars(groups, bars, "mean group utility", zero=True)


def coverage_bars(groups: list[str], pool_pct: list[float], kept_pct: list[float]) -> bytes:
    """Share of samples whose main benefit is each anchor group, pool vs kept: coverage collapse
    (a skill that only helps one group losing its samples) shows as a short blue bar."""
    bars = [(pool_pct, REST, "pool"), (kept_pct, KEEP, "kept")]
    return _paired_bars(groups, bars, "% of samples (main benefit)", zero=False)
