"""How the ledger talks to its database: engine, models, transactions, hot statements."""
