"""ascan-search: multi-objective search of AsCAN layouts. `search.run` is the Python API
(see `search.api`); `run_search.py` is the command line."""


def __getattr__(name: str):
    # Lazy, so that `import search.space.spec` (and Ray workers) do not pay for the whole stack.
    if name in ("run", "SearchResult"):
        from search.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
