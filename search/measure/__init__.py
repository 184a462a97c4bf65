"""Measurement: MACs, latency, data, proxy training and accuracy estimates; everything that
touches torch. `ProxyEvaluator` (in `evaluator.py`) is how the engine reaches it."""
