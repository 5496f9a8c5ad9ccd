"""gestore_retention: export, seal, verify, then erase; audited.

The public API is re-exported here by name and imported lazily, so that
importing the package does not need Django's app registry to be ready.
"""

_API = {
    "walk": "gestore_retention.graph.walk",
    "Plan": "gestore_retention.graph.walk",
    "Scope": "gestore_retention.graph.walk",
    "export_records": "gestore_retention.records",
    "restore": "gestore_retention.restore",
    "erase": "gestore_retention.erase",
    "verify_bundle": "gestore_retention.verify",
    "load_policy": "gestore_retention.policy",
    "Policy": "gestore_retention.policy",
    "RetentionError": "gestore_retention.errors",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'gestore_retention' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
