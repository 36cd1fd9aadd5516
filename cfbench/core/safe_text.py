"""Text made safe for the files cfbench writes for people and spreadsheets.

- :func:`csv_text`: a CSV cell that a spreadsheet would run as a formula (starting with ``= + - @``, tab or
  carriage return) gets a leading apostrophe, so it is shown as text ("CSV injection"). Only for text cells:
  numbers are written by ``repr`` and never pass through here.
- :func:`markdown_text`: Markdown text with HTML escaped (``&`` and ``<``: raw HTML would be rendered from a model
  or run name), line breaks made spaces, and in a table cell ``|`` escaped (it would start a new column).
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: object) -> str:
    """``text`` as a CSV cell that no spreadsheet runs as a formula."""
    text = "" if text is None else str(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def markdown_text(text: object, table_cell: bool = True) -> str:
    """``text`` for Markdown, on one line: ``&`` and ``<`` escaped (no raw HTML, no entity), and in a table cell
    (``table_cell``) ``|`` escaped too."""
    text = ("" if text is None else str(text)).replace("&", "&amp;").replace("<", "&lt;")
    text = text.replace("\r", " ").replace("\n", " ")
    return text.replace("|", "\\|") if table_cell else text
