"""The report page: one HTML file with its figures embedded, so it can be mailed or attached to an e-logbook
alone; the same PNGs are written beside it for slides and logbooks that take images.

A small script marks the page once every figure has decoded (``data-figures-loaded`` on ``<body>``), which
is what a headless browser checks to know the page shows its pictures.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from .figures import QuickLookFigure
from .run_digest import RunDigest
from .run_files import RunKind

_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 1em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; } figcaption { color: #555; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""
_LOADED_SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const shown = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  document.body.setAttribute("data-figures-loaded", String(shown));
});
"""
_OPEN_WITH = {
    RunKind.EIGER: [
        "silx view {path}", "h5web (VS Code extension or myHDF5) on {path}",
        "dials.import {path}", "CrystFEL: indexamajig with a geometry file pointing at /entry/data/data",
    ],
    RunKind.AGIPD: [
        "python -c \"import extra_data; run = extra_data.RunDirectory('{folder}'); run.info()\"",
        "silx view {path}",
    ],
}


def report_page(digest: RunDigest, figures: Sequence[QuickLookFigure]) -> str:
    path = digest.files.master
    title = f"{digest.files.label}: {path.name}"
    rows = {"file": str(path), "kind": digest.files.label, "frames": str(digest.frames), **digest.description}
    if digest.triaged:
        assert digest.is_hit is not None
        triaged = int((digest.is_hit >= 0).sum())
        hits = int((digest.is_hit == 1).sum())
        rows["hits"] = f"{hits} of {triaged} triaged frames ({100 * hits / max(triaged, 1):.1f} %)"
    else:
        rows["triage"] = "not triaged (no /entry/process_01 results)"
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>", f"<script>{_LOADED_SCRIPT}</script>", "</head><body>",
        f"<h1>{html.escape(title)}</h1>", _table(rows),
    ]
    if digest.reduction is not None:
        parts += ["<h2>Data policy metrics</h2>", _table({k: f"{v:g}" for k, v in digest.reduction.items()})]
    for figure in figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts += [f"<figure id='{figure.name}'><h2>{html.escape(figure.title)}</h2>",
                  f"<img alt='{html.escape(figure.title)}' src='data:image/png;base64,{encoded}'>",
                  f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"]
    commands = [c.format(path=path, folder=path.parent) for c in _OPEN_WITH[digest.files.kind]]
    parts += ["<h2>Open the data</h2><ul>", *(f"<li><code>{html.escape(c)}</code></li>" for c in commands),
              "</ul>", "</body></html>"]
    return "\n".join(parts)


def _table(rows: dict[str, str]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"
