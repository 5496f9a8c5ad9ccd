"""Shared fixtures. The database comes from DATABASE_URL (see demoapp.settings);
`make test` runs the suite once per database that answers."""
import pytest
from django.db import connection


@pytest.fixture
def vendor():
    """The database vendor the suite runs on: sqlite, postgresql or mysql."""
    return connection.vendor


@pytest.fixture
def retention_env(settings, tmp_path):
    """Fresh keys, bundle storage and media under tmp_path, as settings.

    Keys are generated here, never committed. Returns the tmp paths.
    """
    from gestore_retention.bundle import generate_keys

    keys = tmp_path / "keys"
    generate_keys(keys)
    settings.GESTORE_RETENTION = dict(settings.GESTORE_RETENTION, KEYS_DIR=str(keys))
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = dict(
        settings.STORAGES,
        retention={
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "bundles")},
        },
    )
    return tmp_path
