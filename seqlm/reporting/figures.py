"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state) as PNG bytes.

Each figure overlays every run (one colour per run, labelled with its name), has labelled axes with
units, and is legible in print (white background, 10 pt text, lines of 1.4 pt). Long curves are
drawn decimated (`seqlm.reporting.decimation`). The loss goes on a log axis when it spans a factor
of LOG_LOSS_RATIO or more (pretraining from scratch: 10 → 2), where a linear axis flattens the end.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from seqlm.reporting.decimation import decimate
from seqlm.reporting.runs import Run

DPI = 110
LOG_LOSS_RATIO = 4.0
# Validation keys that count what was scored, or restate the loss: not drawn as metrics.
NOT_METRICS = frozenset({"loss", "perplexity", "examples", "tokens", "words", "questions", "generated", "target_tokens", "sentences"})
DENSE_POINTS = 1000  # a training curve with more points than this is drawn as a lighter band
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


@dataclass
class Figure:
    name: str  # the PNG's file name stem (loss → report-loss.png)
    title: str
    png: bytes


def curve_figures(runs: list[Run]) -> list[Figure]:
    """Loss (training and validation), learning rate, gradient norm, throughput, and the validation metrics against step."""
    figures = []
    if any("loss" in run.train or "val_loss" in run.validation for run in runs):
        figures.append(Figure("loss", "Loss against step (training: solid; validation: dashed with dots)", _loss(runs)))
    if any("lr" in run.train for run in runs):
        figures.append(Figure("learning-rate", "Learning rate against step", _single(runs, "lr", "learning rate")))
    if any("grad_norm" in run.train for run in runs):  # spikes here come before a loss blow-up
        figures.append(Figure("gradient-norm", "Gradient norm against step (before clipping)",
                              _single(runs, "grad_norm", "gradient norm (L2, before clipping)")))  # fmt: skip
    if any("tokens_per_s" in run.train for run in runs):
        figures.append(Figure("throughput", "Training throughput against step", _single(runs, "tokens_per_s", "throughput (tokens/s)")))
    metrics = validation_metrics(runs)
    if metrics:
        figures.append(Figure("validation-metrics", "Validation metrics against step", _validation(runs, metrics)))
    return figures


def validation_metrics(runs: list[Run]) -> list[str]:
    """The validation keys drawn as metrics (val_accuracy, val_bleu, …), in the order the runs logged them."""
    keys: dict[str, None] = {}
    for run in runs:
        for key in run.validation:
            if key.startswith("val_") and key[4:] not in NOT_METRICS:
                keys[key] = None
    return list(keys)


def confusion_figure(run: Run, index: int) -> Figure | None:
    """eval/metrics.json's confusion matrix as a heatmap (rows: true label, columns: predicted), counts in the cells."""
    confusion = run.evaluation.get("confusion_matrix")
    if not isinstance(confusion, dict) or not confusion.get("labels"):
        return None
    labels, matrix = [str(label) for label in confusion["labels"]], np.asarray(confusion["matrix"], dtype=float)
    side = min(12.0, 2.5 + 0.45 * len(labels))
    figure, axes = _figure(side + 1.2, side)
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    if len(labels) <= 25:  # beyond that the numbers no longer fit their cells
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, f"{count:.0f}", ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")  # fmt: skip
    figure.colorbar(image, ax=axes, label="examples" if "per_class" in run.evaluation else "words")
    axes.set_title(f"{run.label}: confusion matrix ({run.evaluation.get('data', 'evaluation data')})", fontsize=10)
    return Figure(f"confusion-{index + 1}", f"{run.label}: confusion matrix (rows: true label, columns: predicted)", _png(figure))


def _loss(runs: list[Run]) -> bytes:
    figure, axes = _figure()
    lows, highs = [], []
    for index, run in enumerate(runs):
        colour = COLOURS[index % len(COLOURS)]
        if "loss" in run.train:
            steps, values = decimate(*run.train["loss"])
            dense = len(values) > DENSE_POINTS  # a noisy band: lighter, so the validation points on it show
            axes.plot(steps, values, color=colour, linewidth=1.0 if dense else 1.4, alpha=0.5 if dense else 1.0,
                      label=f"{run.label} training")  # fmt: skip
            lows.append(np.min(values, initial=np.inf))
            highs.append(np.max(values, initial=-np.inf))
        if "val_loss" in run.validation:
            steps, values = decimate(*run.validation["val_loss"])
            axes.plot(steps, values, color=colour, linewidth=1.4, linestyle="--", marker="o", markersize=4.5,
                      markeredgecolor="white", markeredgewidth=0.6, zorder=3, label=f"{run.label} validation")  # fmt: skip
            lows.append(np.min(values, initial=np.inf))
            highs.append(np.max(values, initial=-np.inf))
    low, high = min(lows, default=math.inf), max(highs, default=-math.inf)
    logarithmic = 0 < low and high / low >= LOG_LOSS_RATIO
    if logarithmic:
        from matplotlib.ticker import FuncFormatter

        axes.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 2, 3, 4, 6 rather than 2×10⁰
        axes.yaxis.set_major_formatter(plain)
        axes.yaxis.set_minor_formatter(plain)
    axes.set_xlabel("step (optimizer updates)")
    axes.set_ylabel("loss (cross-entropy, nats)" + (", log scale" if logarithmic else ""))
    _legend(axes)
    return _png(figure)


def _single(runs: list[Run], key: str, label: str) -> bytes:
    figure, axes = _figure(height=3.2)
    for index, run in enumerate(runs):
        if key in run.train:
            steps, values = decimate(*run.train[key])
            axes.plot(steps, values, color=COLOURS[index % len(COLOURS)], linewidth=1.4, label=run.label)
    axes.set_xlabel("step (optimizer updates)")
    axes.set_ylabel(label)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    _legend(axes)
    return _png(figure)


def _validation(runs: list[Run], keys: list[str]) -> bytes:
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, grid = _figure(width=3.6 * columns + 1.0, height=2.9 * rows, rows=rows, columns=columns)
    cells = np.atleast_1d(grid).ravel()
    for cell, key in zip(cells, keys):
        for index, run in enumerate(runs):
            if key in run.validation:
                steps, values = decimate(*run.validation[key])
                cell.plot(steps, values, color=COLOURS[index % len(COLOURS)], linewidth=1.4, marker="o", markersize=3.5,
                          label=run.label)  # fmt: skip
        cell.set_title(f"validation {key[4:].replace('_', ' ')}", fontsize=10)
        cell.set_xlabel("step")
        cell.set_ylabel(key[4:])
        cell.grid(True, color="#dddddd", linewidth=0.6)
    for cell in cells[len(keys):]:
        cell.set_visible(False)
    if len(runs) > 1:
        cells[0].legend(fontsize=8, frameon=False)
    return _png(figure)


def _figure(width: float = 9.0, height: float = 4.2, rows: int = 1, columns: int = 1):
    from matplotlib.figure import Figure as MatplotlibFigure

    figure = MatplotlibFigure(figsize=(width, height), dpi=DPI, layout="constrained", facecolor="white")
    axes = figure.subplots(rows, columns, squeeze=True)
    return figure, axes


def _legend(axes) -> None:
    axes.grid(True, color="#dddddd", linewidth=0.6)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=9, frameon=False)


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()
