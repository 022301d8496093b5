"""Text that others wrote (sites' reasons and names, researchers' job names, the orchestrator's
error details, values in a site's report), made inert before it is shown: never read as rich
markup or matplotlib mathtext, and with no terminal escape or control sequence left in it.

Rich parses markup only in ``str`` renderables: a :class:`~rich.text.Text` is shown as it is,
which is why :func:`as_text` builds one; rich itself keeps escape characters, so both strip
them first (:func:`plain`)."""

from __future__ import annotations

import re

from rich.text import Text

_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, screen clears
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC
    # (hyperlinks, titles, the clipboard), DCS, SOS, PM and APC strings, to their terminator
    r"|\x1b[ -/]*[0-~]?"  # any other escape sequence
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 control characters but newline and tab, DEL, and the bidirectional overrides
that make text read otherwise than it is stored."""


def plain(value: object) -> str:
    """``str(value)`` without terminal escape sequences or control characters (newlines and
    tabs are kept)."""
    return _CONTROL.sub("", _SEQUENCE.sub("", str(value)))


def as_text(value: object, style: str = "") -> Text:
    """``value`` for rich, shown as written (:func:`plain`), never read as markup."""
    return Text(plain(value), style=style)


def figure_text(value: object) -> str:
    """``value`` for a matplotlib title, label or legend, shown as written: its dollar signs
    escaped, so that none starts mathtext."""
    return plain(value).replace("$", r"\$")
