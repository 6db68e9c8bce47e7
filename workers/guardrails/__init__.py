"""Guardrails: what a tenant's policies let through to a provider and back."""
