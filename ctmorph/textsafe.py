"""Text from the input made safe for the CSV and Markdown outputs.

Scan and group names, log values and error messages reach every output. In a CSV opened by
a spreadsheet, a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is evaluated as a formula (CSV or formula injection); in Markdown, brackets, asterisks
or ``<script>`` in a name become links, emphasis or raw HTML. Writers pass every *text* cell
through :func:`csv_cell` or :func:`markdown_text`; numbers are written as numbers. Readers of
the CSVs ctmorph writes pass every text cell through :func:`csv_uncell`, the exact inverse of
:func:`csv_cell`, so a group called ``=X`` is still called ``=X`` in the report.

The module depends on nothing but the standard library, so every layer may use it.
"""

from __future__ import annotations

import html
import re

__all__ = ["CSV_TRIGGERS", "csv_cell", "csv_uncell", "lf_record_ends", "markdown_text"]

#: First characters that make a spreadsheet read a CSV text cell as a formula (OWASP).
CSV_TRIGGERS = frozenset("=+-@\t\r")

# Markdown: punctuation that forms syntax anywhere in a line (links, images, emphasis, code,
# strikethrough, table cells, attribute lists); "." between two digits is left alone so
# numbers and versions stay readable, any other "." is escaped (ordered lists "1. ",
# "www." autolinks); "#", "+" and "-" only form syntax as a line's first character
# (headings, list items, setext underlines), where they are escaped.
_MD_ANYWHERE = re.compile(r"[\\`*_{}\[\]()!|~]|(?<![0-9])\.|\.(?![0-9])")
_MD_LINE_START = re.compile(r"^(\s*)([#+\-])")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_RECORD_END = re.compile(r'("(?:[^"]|"")*")|\r\n')  # a quoted field, or a record end


def _needs_quote(text: str) -> bool:
    """True when ``text`` starts with a trigger, after any number of ``'``."""
    rest = text.lstrip("'")
    return bool(rest) and rest[0] in CSV_TRIGGERS


def csv_cell(text: str) -> str:
    r"""A CSV text cell that a spreadsheet shows as text, never evaluates.

    Parameters
    ----------
    text : str
        The cell's text (a scan or group name, an error message, ...). Only text cells
        go through here: numbers are written as numbers (an SMI of -0.35 stays -0.35).

    Returns
    -------
    str
        ``text`` with one leading ``'`` when it starts with a character of
        :data:`CSV_TRIGGERS` (``= + - @``, tab, carriage return), the OWASP convention
        (spreadsheets show the text after the quote). So that :func:`csv_uncell` can undo
        it exactly, a text made of one or more ``'`` followed by a trigger gets one more
        ``'`` too; any other text is returned unchanged.

    Notes
    -----
    OWASP, "CSV Injection", https://owasp.org/www-community/attacks/CSV_Injection.

    Examples
    --------
    >>> csv_cell('=HYPERLINK("http://evil","x")')
    '\'=HYPERLINK("http://evil","x")'
    >>> csv_cell("-2+3"), csv_cell("sham"), csv_cell("'=x"), csv_cell("it's")
    ("'-2+3", 'sham', "''=x", "it's")
    """
    return "'" + text if _needs_quote(text) else text


def csv_uncell(text: str) -> str:
    """The text :func:`csv_cell` was given: ``csv_uncell(csv_cell(s)) == s`` for every ``s``.

    Parameters
    ----------
    text : str
        A text cell read from a CSV written with :func:`csv_cell`. A cell written without it
        (an older file) comes back unchanged unless it starts with ``'`` followed by a
        trigger, which :func:`csv_cell` never leaves unquoted.

    Returns
    -------
    str
        ``text`` without its leading ``'`` when that quote was added by :func:`csv_cell`.

    Examples
    --------
    >>> csv_uncell("'=SUM(A1)"), csv_uncell("''=x"), csv_uncell("'sham"), csv_uncell("OVX")
    ('=SUM(A1)', "'=x", "'sham", 'OVX')
    """
    if text.startswith("'") and _needs_quote(text[1:]):
        return text[1:]
    return text


def markdown_text(text: str) -> str:
    r"""Text shown literally inside a Markdown paragraph or table cell.

    Parameters
    ----------
    text : str
        A name, log value or message from the input.

    Returns
    -------
    str
        ``text`` with ``&``, ``<`` and ``>`` as HTML entities (no raw HTML, no
        ``<http://...>`` autolinks, no block quote); the punctuation that can form links,
        images, emphasis, code, strikethrough or table breaks, ``\ ` * _ { } [ ] ( ) ! | ~``,
        backslash-escaped; ``.`` escaped except between two digits (``0.5``, ``1.7.4``
        stay readable; ``1.`` list markers and ``www.`` autolinks do not form); ``#``, ``+``
        and ``-`` escaped where they are the first character (a heading or list item);
        line breaks turned into spaces. It renders as ``text``.

    Notes
    -----
    CommonMark 0.31 §2.4 (backslash escapes), §2.5 (entities), §6.6 (raw HTML) and the
    GitHub Flavored Markdown table and autolink extensions.

    Examples
    --------
    >>> markdown_text("<script>alert(1)</script>")
    '&lt;script&gt;alert\\(1\\)&lt;/script&gt;'
    >>> markdown_text("[x](http://evil) *bold* a|b")
    '\\[x\\]\\(http://evil\\) \\*bold\\* a\\|b'
    >>> markdown_text("OVX+Exos"), markdown_text("-2+3"), markdown_text("Al 0.5mm")
    ('OVX+Exos', '\\-2+3', 'Al 0.5mm')
    """
    text = _NEWLINES.sub(" ", text)
    text = _MD_ANYWHERE.sub(lambda m: "\\" + m.group(0), text)
    text = html.escape(text, quote=False)
    return _MD_LINE_START.sub(r"\1\\\2", text, count=1)


def lf_record_ends(text: str) -> str:
    r"""CSV text written with ``\r\n`` record ends, with ``\n`` record ends instead.

    Python's CSV writer quotes a field for the characters of its line terminator only: with
    ``\n`` a carriage return inside a name would not be quoted and would end the row when
    read back. Writers therefore write ``\r\n`` (so fields holding either are quoted) and
    pass the text through here, which turns every ``\r\n`` outside a quoted field into
    ``\n`` and leaves quoted fields as they are.

    Examples
    --------
    >>> lf_record_ends('scan,group\r\n"a\rb",x\r\n')
    'scan,group\n"a\rb",x\n'
    """
    return _RECORD_END.sub(lambda m: m.group(1) or "\n", text)
