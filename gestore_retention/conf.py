"""Settings of gestore_retention with their defaults (the only reader of settings).

Configure with a dict in your settings module:

    GESTORE_RETENTION = {
        "KEYS_DIR": BASE_DIR / "keys",      # key files made by `retention keygen`
        "POLICY_DIRS": [BASE_DIR / "policies"],
        "STORAGE": "retention",             # a STORAGES alias for bundles
        "BATCH_SIZE": 1000,                 # rows per query / per insert
        "LEASE_SECONDS": 600,               # how long a worker owns a job
        "ERASE_BATCH_ROWS": 200_000,        # owned rows per erase transaction (larger subjects: batches)
    }

When KEYS_DIR is not set, the environment's GESTORE_RETENTION_KEYS_DIR is used.
"""
import os

from django.conf import settings

DEFAULTS = {
    "KEYS_DIR": None,
    "POLICY_DIRS": [],
    "STORAGE": "retention",
    "BATCH_SIZE": 1000,
    "LEASE_SECONDS": 600,
    "ERASE_BATCH_ROWS": 200_000,
}


def get(name):
    """Return the setting `name`, falling back to its default."""
    if name not in DEFAULTS:
        raise AttributeError(f"unknown gestore_retention setting {name!r}")
    value = getattr(settings, "GESTORE_RETENTION", {}).get(name, DEFAULTS[name])
    if name == "KEYS_DIR" and not value:
        value = os.environ.get("GESTORE_RETENTION_KEYS_DIR") or None
    return value
