"""Text and video queries over an index: the searcher (a query vector, LanceDB's ANN search, the
best row per video), and the web service (``web/``: the API, media streaming, the page; ``service``:
the app on Ray Serve)."""

from .. import lazy_exports

_PUBLIC = {"Searcher": "searcher", "SearchConfig": "searcher", "Result": "searcher", "search": "searcher",
           "index_and_search": "after_indexing", "ServeConfig": "service", "create_app": "web.app"}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
