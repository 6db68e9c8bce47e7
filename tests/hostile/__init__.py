"""Hostile specs: one per hole a hostile review found, each failing without its fix, plus the
general properties (docs/security.md names the spec proving each boundary). Every test here is
marked ``hostile``; `make test` runs them on the embedded broker and again on Apache Kafka."""
