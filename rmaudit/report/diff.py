"""Side-by-side text diff as escaped HTML rows, for the ``diff`` chart kind.

Built for rendered chat templates, where the difference is often invisible whitespace
or one special token: changed characters are highlighted, and in changed lines spaces,
tabs and line ends are drawn (``·``, ``→``, ``↵``) so a stray newline can be seen.
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass

from markupsafe import Markup

MAX_DIFF_CHARS = 20_000  # per side; templates are short, anything longer is cut with a note
SIMILAR_LINES = 0.6  # below this similarity two paired lines are shown as wholly changed
_VISIBLE_WS = {" ": "·", "\t": "→", "\r": "␍", "\n": "↵"}


@dataclass
class DiffRow:
    """One row of the side-by-side table; ``tag`` is equal, replace, delete or insert."""

    tag: str
    left_no: int | None
    left: Markup
    right_no: int | None
    right: Markup


def _plain(line: str) -> Markup:
    return Markup(html.escape(line.rstrip("\r\n")))


def _visible(text: str) -> str:
    return "".join(_VISIBLE_WS.get(ch, ch) for ch in text)


def _marked(text: str, changed: bool) -> str:
    if not changed:
        return html.escape(text.rstrip("\r\n")) + html.escape(_visible(text[len(text.rstrip("\r\n")):]))
    return f'<span class="chg">{html.escape(_visible(text))}</span>'


def _intraline(a: str, b: str) -> tuple[Markup, Markup]:
    """Both lines with the characters that differ wrapped in ``<span class="chg">``.

    Lines that share little are marked whole: scattered one-letter matches only confuse.
    """
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.ratio() < SIMILAR_LINES:
        return Markup(_marked(a, True)), Markup(_marked(b, True))
    left, right = [], []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        left.append(_marked(a[i1:i2], op != "equal"))
        right.append(_marked(b[j1:j2], op != "equal"))
    return Markup("".join(left)), Markup("".join(right))


def side_by_side(left: str, right: str) -> tuple[list[DiffRow], bool]:
    """Diff rows for two texts and whether either text was cut at ``MAX_DIFF_CHARS``."""
    cut = len(left) > MAX_DIFF_CHARS or len(right) > MAX_DIFF_CHARS
    a = left[:MAX_DIFF_CHARS].splitlines(keepends=True)
    b = right[:MAX_DIFF_CHARS].splitlines(keepends=True)
    rows: list[DiffRow] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [DiffRow("equal", i1 + k + 1, _plain(a[i1 + k]), j1 + k + 1, _plain(b[j1 + k])) for k in range(i2 - i1)]
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            li, rj = i1 + k, j1 + k
            if li < i2 and rj < j2:
                lhtml, rhtml = _intraline(a[li], b[rj])
                rows.append(DiffRow("replace", li + 1, lhtml, rj + 1, rhtml))
            elif li < i2:
                rows.append(DiffRow("delete", li + 1, Markup(_marked(a[li], True)), None, Markup("")))
            else:
                rows.append(DiffRow("insert", None, Markup(""), rj + 1, Markup(_marked(b[rj], True))))
    return rows, cut
