"""`python -m search.replay`: an alias of `search.app.replay`."""
from search.app.replay import main

if __name__ == "__main__":
    raise SystemExit(main())
