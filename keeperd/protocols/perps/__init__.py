"""Perpetual-futures venues: account margin, liquidation prices, funding (monitor and alert;
keeperd does not liquidate on these venues, their own engines do)."""
