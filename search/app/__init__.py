"""The application: the CLI's settings, a run's wiring and phases, the Python API."""
