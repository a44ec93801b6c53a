"""Write the README's "Definitions" table from the column registry (ctmorph/columns.py).

Usage::

    .venv/bin/python scripts/update_readme_columns.py [--check] [README.md]

The table sits between ``<!-- columns:begin -->`` and ``<!-- columns:end -->``; everything
else in the README stays as written. ``--check`` writes nothing and exits 1 when the README's
table differs from what the registry generates (``tests/test_columns.py`` runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctmorph.columns import definitions_table

BEGIN = "<!-- columns:begin -->"
END = "<!-- columns:end -->"
NOTE = ("<!-- generated from ctmorph/columns.py by scripts/update_readme_columns.py: edit the "
        "registry, not this table -->")
README = Path(__file__).resolve().parents[1] / "README.md"


def with_table(text: str) -> str:
    """``text`` with the part between the markers replaced by the generated table.

    Raises
    ------
    ValueError
        The markers are missing, repeated or out of order.
    """
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the README needs one {BEGIN} followed by one {END}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{NOTE}\n\n{definitions_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", type=Path, default=README)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the table is out of date; write nothing")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    try:
        new = with_table(text)
    except ValueError as exc:
        print(f"{args.readme}: {exc}", file=sys.stderr)
        return 1
    if new == text:
        return 0
    if args.check:
        print(f"{args.readme}: the Definitions table differs from ctmorph/columns.py; run "
              f"scripts/update_readme_columns.py", file=sys.stderr)
        return 1
    args.readme.write_text(new, encoding="utf-8")
    print(f"wrote the Definitions table of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
