"""Retention: finished jobs leave ``jobs`` after the results window, usage rolls up by day."""
