"""The README documents every option exactly as the code defines it."""

from __future__ import annotations

from pathlib import Path

from zosfs.options import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_option_table_matches_the_code() -> None:
    assert markdown_table() in README.read_text(), (
        "README's option table is out of date: paste the output of `python -m zosfs.options`"
    )
