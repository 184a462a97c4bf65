"""Specs and the search space: YAML → `Spec` → `SearchSpace` → candidates and their networks."""
