"""Alerting: rules with an Alertmanager-like lifecycle, a durable outbox, and sinks."""
