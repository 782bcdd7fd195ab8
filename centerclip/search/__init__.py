"""Text and video queries over an index: the searcher (a query vector, LanceDB's ANN search, the
best row per video), and the web service (``web/``: the API, media streaming, the page)."""

from .. import lazy_exports

_PUBLIC = {"Searcher": "searcher", "SearchConfig": "searcher", "Result": "searcher", "search": "searcher"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
