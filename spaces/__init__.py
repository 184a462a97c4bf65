"""The shipped search-space specs (`*.yaml`), installed as the package `search.spaces`
(see pyproject.toml) so that `importlib.resources` finds them in a wheel."""
