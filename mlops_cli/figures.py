"""Figures logged with a training run (matplotlib, Agg backend: no display needed). The registry
only logs the figures it is given (registry.log_training)."""

from __future__ import annotations

from typing import Any


def figure_confusion(cm, labels) -> Any:
    """A confusion-matrix figure (matplotlib, Agg backend; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 9), dpi=80)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (holdout, row-normalised)")
    fig.tight_layout()
    return fig


def close_figure(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
