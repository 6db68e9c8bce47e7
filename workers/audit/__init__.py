"""The audit trail: one insert-only record per stored result — who, what ran where, what it
cost, digests of the prompt and output — and captures kept apart."""
