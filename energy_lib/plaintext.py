"""User text (study and cell names, descriptions, file names) shown as plain text everywhere.

matplotlib reads a pair of `$` in any label as math (TeX) and fails on an unknown command, so a
cell named after a value like `$\\frac` could break or garble a figure. Two ways to prevent it:

- `plain_text_figures()`: a context in which every text matplotlib creates is plain (rcParam
  `text.parse_math` off); wrap the code that builds and saves figures.
- `mpl_plain(text)`: one label made literal (each `$` escaped), for a figure that does use math
  elsewhere.

HTML needs nothing here: the report's HTML is nbconvert's rendering of text and pandas outputs,
both escaped.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


def mpl_plain(text: object) -> str:
    """`text` as a matplotlib label shown literally: `$` escaped; a leading `_` (which
    matplotlib's legend treats as 'hide this entry') kept visible."""
    label = str(text).replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


@contextlib.contextmanager
def plain_text_figures() -> Iterator[None]:
    """Figures and texts created inside the block never read `$...$` as math."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield
