"""`python -m search.dashboard`: an alias of `search.report.dashboard`."""
from search.report.dashboard import main

if __name__ == "__main__":
    raise SystemExit(main())
