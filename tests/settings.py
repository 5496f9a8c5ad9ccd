"""Test settings: the demo's, plus the failure-case app and a second database alias.

The alias "other" is a second database of the same engine, for tests of
`using=` (the walk, export and restore must send no query to another alias).
"""
import copy

from demoapp.settings import *  # noqa: F401,F403
from demoapp.settings import DATABASES, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.caseapp"]

DATABASES["other"] = copy.deepcopy(DATABASES["default"])
if DATABASES["other"]["ENGINE"].endswith("sqlite3"):
    DATABASES["other"]["NAME"] = str(DATABASES["default"]["NAME"]) + ".other"
    DATABASES["other"]["TEST"] = {"NAME": None}
else:
    test = DATABASES["other"].setdefault("TEST", {})
    base = DATABASES["default"].get("TEST", {}).get("NAME") or "test_" + DATABASES["default"]["NAME"]
    test["NAME"] = base + "_other"
