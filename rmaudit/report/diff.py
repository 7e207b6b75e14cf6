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


def _pair_lines(a: list[str], b: list[str]) -> list[tuple[int | None, int | None]]:
    """Align two blocks of changed lines: similar lines side by side, the rest alone.

    Greedy and order-keeping: each left line pairs with the next right line at least
    ``SIMILAR_LINES`` alike; right lines skipped on the way are insertions.
    """
    pairs: list[tuple[int | None, int | None]] = []
    j = 0
    for i, line in enumerate(a):
        match = next((k for k in range(j, len(b))
                      if difflib.SequenceMatcher(None, line, b[k], autojunk=False).ratio() >= SIMILAR_LINES), None)
        if match is None:
            pairs.append((i, None))
            continue
        pairs += [(None, k) for k in range(j, match)] + [(i, match)]
        j = match + 1
    return pairs + [(None, k) for k in range(j, len(b))]


def _changed_rows(a: list[str], b: list[str], a0: int, b0: int) -> list[DiffRow]:
    rows = []
    for i, j in _pair_lines(a, b):
        if i is not None and j is not None:
            lhtml, rhtml = _intraline(a[i], b[j])
            rows.append(DiffRow("replace", a0 + i + 1, lhtml, b0 + j + 1, rhtml))
        elif i is not None:
            rows.append(DiffRow("delete", a0 + i + 1, Markup(_marked(a[i], True)), None, Markup("")))
        else:
            rows.append(DiffRow("insert", None, Markup(""), b0 + j + 1, Markup(_marked(b[j], True))))
    return rows


def side_by_side(left: str, right: str) -> tuple[list[DiffRow], bool]:
    """Diff rows for two texts and whether either text was cut at ``MAX_DIFF_CHARS``."""
    cut = len(left) > MAX_DIFF_CHARS or len(right) > MAX_DIFF_CHARS
    a = left[:MAX_DIFF_CHARS].splitlines(keepends=True)
    b = right[:MAX_DIFF_CHARS].splitlines(keepends=True)
    rows: list[DiffRow] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [DiffRow("equal", i1 + k + 1, _plain(a[i1 + k]), j1 + k + 1, _plain(b[j1 + k])) for k in range(i2 - i1)]
        else:
            rows += _changed_rows(a[i1:i2], b[j1:j2], i1, j1)
    return rows, cut
