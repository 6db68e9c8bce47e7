"""A worker process's life: start, wiring, readiness, probes, diagnostics, shutdown."""
