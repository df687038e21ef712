"""Drawing computational graphs (:meth:`ghnas.graph.Graph.draw`), kept apart from the
extraction code in :mod:`ghnas.graph` so that matplotlib is a concern of this file only."""
from __future__ import annotations

from typing import Any

import numpy as np

from .graph import PRIMITIVES

__all__ = ["draw_graph", "OP_COLORS"]

#: Distinct colours per primitive (convolutions in greens/blues).
OP_COLORS = {
    "conv": "#2ca02c", "sep_conv": "#17becf", "dil_conv": "#1f77b4", "bias": "#e377c2",
    "bn": "#ff7f0e", "ln": "#ffdd57", "sum": "#d62728", "concat": "#9467bd",
    "max_pool": "#8c564b", "avg_pool": "#c49c94", "glob_avg": "#7f7f7f", "msa": "#222222",
    "cse": "#bcbd22", "pos_enc": "#aec7e8", "input": "#ffffff",
}


def draw_graph(graph: Any, path: str | None = None, ax=None, node_size: float | None = None,
               labels: bool = False):
    """Draw ``graph`` top (input) to bottom (output); see :meth:`ghnas.graph.Graph.draw`."""
    from matplotlib.lines import Line2D

    n = len(graph.nodes)
    depth = graph.depths()
    n_layers = int(depth.max()) + 1 if n else 1
    width = max(np.bincount(depth).max() if n else 1, 1)
    pos = np.zeros((n, 2))
    for level in range(n_layers):
        members = np.nonzero(depth == level)[0]
        k = len(members)
        for j, i in enumerate(members):
            pos[i] = ((j - (k - 1) / 2.0), -level)

    if ax is None:
        size = (min(4 + 0.6 * width, 30), min(3 + 0.25 * n_layers, 60))
        if path is not None:
            # a bare Figure needs no display and leaves pyplot's state alone
            from matplotlib.figure import Figure

            ax = Figure(figsize=size).subplots()
        else:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=size)
    if node_size is None:
        node_size = float(np.clip(4000.0 / max(n, 1), 12, 120))

    colors = OP_COLORS
    edges = np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2)
    for s, d in edges:
        # edges that skip layers are bent so they do not hide behind the nodes they pass
        bend = 0.0 if depth[d] - depth[s] <= 1 else 0.35
        ax.annotate("", xy=pos[d], xytext=pos[s],
                    arrowprops=dict(arrowstyle="-|>", lw=0.5, color="0.5", alpha=0.7,
                                    shrinkA=3, shrinkB=3, mutation_scale=7,
                                    connectionstyle=f"arc3,rad={bend}"))
    ops = [node.op for node in graph.nodes]
    present = [p for p in PRIMITIVES if p in set(ops)]
    for p in present:
        idx = [i for i, o in enumerate(ops) if o == p]
        ax.scatter(pos[idx, 0], pos[idx, 1], s=node_size, color=colors[p], edgecolors="k",
                   linewidths=0.4, zorder=3)
    if labels:
        for i, node in enumerate(graph.nodes):
            ax.text(pos[i, 0], pos[i, 1], " " + node.op, fontsize=6, va="center", zorder=4)
    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=colors[p],
                      markeredgecolor="k", label=p) for p in present]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
              title="op")
    ax.set_axis_off()
    ax.set_title(f"{n} nodes, {len(edges)} edges")
    if path is not None:
        ax.figure.savefig(path, bbox_inches="tight", dpi=120)
    return ax
