"""The provider Batch-API lane: deadline-tolerant jobs handed to providers' Batch APIs."""
