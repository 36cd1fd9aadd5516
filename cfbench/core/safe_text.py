"""Text made safe for the files cfbench writes for people and spreadsheets.

- :func:`csv_text`: a CSV cell that a spreadsheet would run as a formula (starting with ``= + - @``, tab or
  carriage return) gets a leading apostrophe, so it is shown as text ("CSV injection"). Only for text cells:
  numbers are written by ``repr`` and never pass through here.
- :func:`markdown_text`: a Markdown table cell with ``|`` escaped (it would start a new column), line breaks
  made spaces, and HTML (``& < >``) escaped (raw HTML would be rendered from a model or run name).
"""

from __future__ import annotations

import html

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: object) -> str:
    """``text`` as a CSV cell that no spreadsheet runs as a formula."""
    text = "" if text is None else str(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def markdown_text(text: object) -> str:
    """``text`` for a Markdown table cell or line: HTML escaped, ``|`` escaped, one line."""
    text = html.escape("" if text is None else str(text), quote=False)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
