"""Price feeds, their health checks, and the circuit breaker that pauses liquidations."""
