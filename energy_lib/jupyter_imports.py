"""The Jupyter libraries this project drives (papermill, nbformat, nbconvert), imported without
a cost they carry for nothing here.

nbformat validates notebooks with jsonschema, and jsonschema imports every optional format
checker when it is imported, among them `rfc3987_syntax`, which builds about 38 Lark parsers
for IRI grammars at import: 1.1-3.3 s of every `energy-study` command, Dask worker and
analysis kernel on a 2-core VM (measured: `import papermill` 1.55 s, 0.42 s without it;
upstream: python-jsonschema/jsonschema#1428). No schema these libraries validate here uses
the `iri` formats, so before importing them the processes that execute or write notebooks
mark that one module absent; jsonschema then leaves out its two IRI format checks, in this
process only. A process that imported rfc3987_syntax already keeps it.
"""

from __future__ import annotations

import sys

#: jsonschema's optional IRI checker, whose import builds its grammars
IRI_CHECKER = "rfc3987_syntax"


def without_iri_grammars() -> None:
    """Call before importing papermill, nbformat or nbconvert (no-op where already done)."""
    sys.modules.setdefault(IRI_CHECKER, None)
