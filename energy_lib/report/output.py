"""How the report reaches its reader: the writers (a PNG or CSV is never a half file), figures
whose text is plain, and the self-contained HTML of an executed notebook.

Plain text: matplotlib reads a pair of `$` in a label as math (TeX) and fails on an unknown
command, so a cell named after a value like `$\\frac` could break or garble a figure. Every
figure function of the report is built under `plain_figure`: each text it creates keeps math
parsing off, also when the figure is drawn later. That is the one mechanism; `legend_name` is
a separate guard for legend entries that start with `_`. HTML needs nothing here: nbconvert
escapes text and pandas outputs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from ..files import atomic_write


def plain_figure(build):
    """Decorate a function that builds a figure: every text it creates is plain (rcParam
    `text.parse_math` off while it runs; each Text keeps the setting it was made with)."""
    @functools.wraps(build)
    def plain(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return build(*args, **kwargs)

    plain.plain_text = True
    return plain


def legend_name(name: object) -> str:
    """`name` as a legend entry: matplotlib hides entries whose label starts with `_`; a
    zero-width space in front keeps such a name visible."""
    label = str(name)
    return "\u200b" + label if label.startswith("_") else label


def say_empty(ax, why: str) -> None:
    """An empty plot that says why it is empty (never a crash, never a blank)."""
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            wrap=True)


#: The attribute a saved figure carries: the PNG it was saved as (`shown`).
SAVED_AS = "energy_study_png"


def save_figure(fig, path: Path) -> Path:
    """A PNG written via a temporary name (files.atomic_write): never a half file. The figure
    remembers the file, so a notebook shows the file rather than drawing the figure again."""
    saved = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight",
                                                       format="png"))
    setattr(fig, SAVED_AS, saved)
    return saved


def shown(item):
    """What a notebook displays for a report item: a saved figure as its PNG file (drawing it
    again for the notebook took ~3 s of every analysis), anything else as it is."""
    path = getattr(item, SAVED_AS, None)
    if path is not None and Path(path).is_file():
        from IPython.display import Image

        return Image(filename=str(path))
    return item


def save_csv(table: pd.DataFrame, path: Path) -> Path:
    """A CSV written via a temporary name (files.atomic_write): never a half file."""
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


#: nbconvert's lab template without its scripts from a CDN (require.js, MathJax, Mermaid,
#: widgets): a lab record must read offline, and the report has no math or widgets to render.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style>
/* a 1280-px window reads every table: long cells wrap between words (a word is never cut),
   text reads from the left, nothing is elided; a table wider than the page scrolls inside its
   output instead of widening the page */
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal !important;
  max-width: 40em; min-width: 5em; overflow-wrap: break-word; text-align: left !important;
  font-size: 12px; }
.jp-OutputArea-output { overflow-x: auto; }
</style>{% endblock extra_css %}
"""


def export_html(executed_notebook: str | Path, html_path: str | Path) -> Path:
    """Self-contained HTML of an executed notebook without its code cells (nbconvert): no
    script loaded from the network. Written atomically."""
    import jinja2
    from ..jupyter_imports import without_iri_grammars

    without_iri_grammars()
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, template_file="energy_study_offline.html.j2",
                            extra_loaders=[jinja2.DictLoader(
                                {"energy_study_offline.html.j2": OFFLINE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed_notebook), as_version=4))
    return atomic_write(html_path, lambda tmp: tmp.write_text(body, encoding="utf-8"))
