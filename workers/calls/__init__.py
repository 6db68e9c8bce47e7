"""Calling providers: routing, limits, health, retries, micro-batches, call slots."""
