"""May this tenant's job start now? Quotas and money budgets shared across workers."""
