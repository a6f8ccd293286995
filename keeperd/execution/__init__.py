"""Liquidation execution: the decision, the transaction manager and the journal."""
