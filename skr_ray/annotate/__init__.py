"""Self-annotation: the base model labels raw inputs through its normal generation, on Ray Data."""
