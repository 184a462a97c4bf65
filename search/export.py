"""`python -m search.export`: an alias of `search.report.export`."""
from search.report.export import main

if __name__ == "__main__":
    raise SystemExit(main())
