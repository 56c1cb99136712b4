"""Loss curves: a run's metrics.jsonl as a table and as the plot notebooks 03 and 04 draw.

Loss against optimizer step shows what a recipe learns per update; loss against wall-clock
seconds shows what it costs. Both come from the rows the trainer logs (training.runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from atomlib.training.runs import read_metrics


def loss_curves(run) -> pd.DataFrame:
    """A run's metrics.jsonl as a DataFrame (step, loss, train_loss, val_loss, elapsed_s, ...)."""
    return pd.DataFrame(read_metrics(run))


def plot_loss_curves(runs: Sequence, axes=None):
    """Loss against optimizer step (left) and wall-clock seconds (right), for one or more runs: a
    thin line for each logged training batch, markers for the evaluations (train "^", val "o").
    The loss axis is logarithmic: the first steps fall fast, and a log axis keeps the tail readable."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    else:
        fig = axes[0].figure
    for run in runs:
        df = loss_curves(run)
        if not df.empty:
            _plot_run(axes, df, Path(run).name)
    axes[0].set(xlabel="optimizer step", ylabel="cross-entropy (nats/token)", title="loss vs step", yscale="log")
    axes[1].set(xlabel="wall-clock seconds (elapsed_s)", title="loss vs time")
    axes[0].yaxis.set_major_formatter("{x:.1f}")
    axes[0].yaxis.set_minor_formatter("{x:.1f}")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_run(axes, df: pd.DataFrame, name: str) -> None:
    """One run's lines: every logged batch, then its evaluations, in one colour on both axes."""
    ev = df[df["val_loss"].notna()] if "val_loss" in df else df.iloc[0:0]
    for ax, x in ((axes[0], "step"), (axes[1], "elapsed_s")):
        if x not in df:
            continue
        color = ax.plot(df[x], df["loss"], lw=1, alpha=0.5, label=f"{name} train (batch)")[0].get_color()
        if "train_loss" in ev:
            ax.plot(ev[x], ev["train_loss"], "^--", color=color, alpha=0.7, label=f"{name} train (eval)")
        if len(ev):
            ax.plot(ev[x], ev["val_loss"], "o-", color=color, label=f"{name} val")
