"""`engine.cli.console.print_table_or_lines`: a table where every cell fits whole, else lines."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from engine.cli.console import narrowest_width, print_table_or_lines


def _table() -> Table:
    table = Table(title="Funnel")
    table.add_column("criterion", overflow="fold", min_width=8)
    table.add_column("kind", no_wrap=True)
    table.add_column("lost", justify="right", no_wrap=True)
    table.add_row("inclusion-1-relapsed-refractory-itp", "inclusion", "1,250")
    table.add_row("exclusion-2", "exclusion", "3")
    return table


def test_the_narrowest_width_counts_the_folded_column_at_its_minimum_and_others_whole() -> None:
    # 8 (folded id) + 9 ("inclusion") + 5 ("1,250") + 3 columns x 2 padding + 4 rules
    assert narrowest_width(_table()) == 8 + 9 + 5 + 6 + 4


@pytest.mark.parametrize("width", [20, 31, 32, 80])
def test_a_terminal_too_narrow_for_the_table_gets_its_lines(width: int) -> None:
    output = io.StringIO()
    console = Console(file=output, width=width)
    lines = ["Funnel", "inclusion-1-relapsed-refractory-itp (inclusion): lost 1,250"]
    print_table_or_lines(console, _table(), lines)
    printed = output.getvalue()
    assert "…" not in printed
    assert max(map(len, printed.splitlines())) <= width
    if width < 32:  # the lines, wrapped as text
        assert "│" not in printed and " ".join(printed.split()).endswith("lost 1,250")
    else:  # the table, its first column's pieces spelling the ids
        cells = [line.split("│")[1].strip() for line in printed.splitlines() if "│" in line]
        assert "".join(cells) == "inclusion-1-relapsed-refractory-itpexclusion-2"
        assert "1,250" in printed


def test_wrapping_columns_count_whole_since_rich_narrows_them_evenly() -> None:
    table = Table()
    table.add_column("first")
    table.add_column("second")
    table.add_row("aaaaaaaaaaaa bb", "cccccccccccc d")
    assert narrowest_width(table) == 15 + 14 + 2 * 2 + 3
    for width in (36, 40):  # the narrowest, and wider: printed whole
        output = io.StringIO()
        print_table_or_lines(Console(file=output, width=width), table, ["lines"])
        assert "│" in output.getvalue() and "…" not in output.getvalue()
