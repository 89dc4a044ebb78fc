"""Evaluation: baselines and SKR on labelled test data, metrics, report and plots."""
