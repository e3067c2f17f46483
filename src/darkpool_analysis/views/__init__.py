"""Charts (matplotlib object API only: no pyplot state, no ``plt.show()``).

Each ``plot*`` function returns a :class:`matplotlib.figure.Figure`; ``draw*`` functions draw
onto axes the caller owns. The CLI saves with :func:`save_figure` and lets the figure go.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

#: File types :func:`save_figure` writes.
FIGURE_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf")


def save_figure(fig: Figure, path: Path, *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (.png, .svg or .pdf) on its own background colour."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(
            f"cannot write a chart to {path}: expected a file ending in "
            f"{', '.join(FIGURE_SUFFIXES)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor=fig.get_facecolor())
    return path


__all__ = ["FIGURE_SUFFIXES", "save_figure"]
