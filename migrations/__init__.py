"""Alembic migrations of the ledger (``headway db upgrade``)."""
