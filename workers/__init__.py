"""headway's worker side: intake, scheduling, providers, ledger, publishing, the CLI."""
