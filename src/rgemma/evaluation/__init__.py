"""Evaluation with lm-evaluation-harness (the `eval` extra): rgemma as an lm-eval model."""
