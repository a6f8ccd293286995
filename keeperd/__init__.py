"""keeperd: a keeper and risk-alerting daemon for leveraged DeFi positions."""

__version__ = "0.1.0"
