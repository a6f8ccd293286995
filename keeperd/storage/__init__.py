"""Storage shared by replicas (PostgreSQL): the lease that decides which one acts."""
