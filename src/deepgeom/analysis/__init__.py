"""Layer-by-layer analyses: capture combined with the functional estimators."""
