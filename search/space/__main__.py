"""`python -m search.space NAME`: print a space."""
from search.space.space import main

raise SystemExit(main())
