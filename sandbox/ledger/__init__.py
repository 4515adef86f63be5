"""The ledger: grants and their credits, charges, the ledger view, and budgets derived from it."""
