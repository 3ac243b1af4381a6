"""The README documents every option exactly as the code defines it, and carries the latest benchmark."""

from __future__ import annotations

from pathlib import Path

from zosfs.options import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_option_table_matches_the_code() -> None:
    assert markdown_table() in README.read_text(), (
        "README's option table is out of date: paste the output of `python -m zosfs.options`"
    )


def tables(markdown: str) -> list[list[str]]:
    """The Markdown tables of a text, each as its list of row lines."""
    found: list[list[str]] = []
    current: list[str] = []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    return found


def test_readme_carries_the_latest_benchmark() -> None:
    """The README shows the table and the targets of the last full benchmark
    run (tests/bench/results/latest.md), as they are."""
    latest = (README.parent / "tests" / "bench" / "results" / "latest.md").read_text()
    readme = README.read_text()
    wanted = [t for t in tables(latest) if t[0].startswith(("| workload | unit |", "| target |"))]
    assert len(wanted) == 2, "latest.md has no results or targets table"
    for table in wanted:
        assert "\n".join(table) in readme, f"README's copy of the benchmark table {table[0]!r} is out of date"
