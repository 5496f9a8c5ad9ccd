"""The demo deployment of gestore-retention: a small multi-tenant SaaS."""
