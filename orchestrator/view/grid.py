"""A table laid out by hand for views redrawn several times a second (the live dashboard).

Rich's `Table` measures, pads, wraps and crops every cell through its whole render pipeline:
about a millisecond per row on a loaded machine, most of a frame's cost. A `Grid` has one line
per row; its columns are as wide as their widest cell (the last one takes the rest of the
width, cut with ``…``), drawn with the same box as Rich's default table, as one `Text`. The
cells must be one line each already (`orchestrator.process.lines.one_line`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions
from rich.text import Text

Cell = tuple[str, str]
"""Text and its style ("" for none)."""


def fit(text: str, width: int, *, right: bool = False) -> str:
    """``text`` in exactly ``width`` cells: padded, or cut with ``…``."""
    size = cell_len(text)
    if size > width:
        return set_cell_size(text, max(width - 1, 0)) + "…" if width > 0 else ""
    pad = " " * (width - size)
    return pad + text if right else text + pad


@dataclass
class Grid:
    """Columns (name, right-justified, widest a cell may make it) and rows of cells."""

    columns: Sequence[tuple[str, bool, int]]
    rows: list[Sequence[Cell]] = field(default_factory=list)
    title: str = ""
    caption: str = ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        width = options.max_width
        widths = [
            min(max([cell_len(name)] + [cell_len(r[i][0]) for r in self.rows]), most)
            for i, (name, _, most) in enumerate(self.columns)
        ]
        # every column takes 3 cells of frame ("│ " before, " " after) and the table one more
        rest = width - sum(widths[:-1]) - 3 * len(widths) - 1
        widths[-1] = max(rest, 1)
        out = Text(no_wrap=True, overflow="crop")
        if self.title:
            out.append(self.title.center(width).rstrip() + "\n", style="italic")

        def rule(left: str, mid: str, right: str, line: str) -> None:
            out.append(left + mid.join(line * (w + 2) for w in widths) + right + "\n")

        rule("┏", "┳", "┓", "━")
        out.append("┃")
        for (name, right, _), w in zip(self.columns, widths, strict=True):
            out.append(" ")
            out.append(fit(name, w, right=right), style="bold")
            out.append(" ┃")
        out.append("\n")
        rule("┡", "╇", "┩", "━")
        for row in self.rows:
            out.append("│")
            for (text, style), (_, right, _), w in zip(row, self.columns, widths, strict=True):
                out.append(" ")
                out.append(fit(text, w, right=right), style=style)
                out.append(" │")
            out.append("\n")
        rule("└", "┴", "┘", "─")
        if self.caption:
            out.append(self.caption.center(width).rstrip() + "\n", style="dim")
        out.rstrip()
        yield out
