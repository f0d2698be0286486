"""Evaluation: metrics of the field (metrics, physics), published-benchmark readers, reports."""
