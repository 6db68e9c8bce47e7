"""The ledger: one row per (tenant, job_id), the usage events, and the batched writer."""
