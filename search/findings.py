"""`python -m search.findings`: an alias of `search.report.findings`."""
from search.report.findings import main

if __name__ == "__main__":
    raise SystemExit(main())
