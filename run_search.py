"""Entry point: `python run_search.py space=hybrid` (the search engine is not built yet)."""
import sys


def main() -> int:
    print("run_search.py: the search engine is not built yet (see README: Status).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
