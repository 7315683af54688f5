"""Closed-loop evaluation: drivers, metrics, videos."""
