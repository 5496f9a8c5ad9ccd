"""Shared fixtures. The database comes from DATABASE_URL (see demoapp.settings);
`make test` runs the suite once per database that answers."""
import pytest
from django.db import connection


@pytest.fixture
def vendor():
    """The database vendor the suite runs on: sqlite, postgresql or mysql."""
    return connection.vendor
