"""Offline evaluation: protocols P1/P2, full-ranking metrics, tuning and reports."""
