"""The search engine: the study, the ask/tell driver, executors, refinement and trial records.
It never imports torch or `ascan`: everything it measures comes from an `Evaluator`."""
