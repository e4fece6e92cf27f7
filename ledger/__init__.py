"""Heartleaf's double-entry core: communities, currencies, accounts, transactions, balances."""
