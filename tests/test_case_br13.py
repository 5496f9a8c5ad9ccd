"""BR-13: JSON values round-trip by type: dict, list, str, number, bool, JSON null vs SQL NULL."""
import json

import pytest
from django.db.models import JSONField, Value

from gestore_retention.graph.walk import walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from tests.caseapp.models import Profile, Setting

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)

S1 = {"a": None, "b": False, "c": [1, 2.5, "x"], "d": {"e": "it's"}}
S5 = '{"looks": "like json"}'


def make():
    p = Profile.objects.create(name="p")
    for key, value in [("s1", S1), ("s2", "plain string"), ("s3", []), ("s4", None), ("s5", S5)]:
        Setting.objects.create(owner=p, key=key, value=value)
    return p


def export(root):
    return json.loads(json.dumps(list(Export(walk([root])).records())))


def test_the_bundle_stores_json_values_as_json():
    records = {r["fields"]["key"]: r for r in export(make()) if r["model"] == "app.setting"}
    assert records["s1"]["fields"]["value"] == S1
    assert records["s2"]["fields"]["value"] == "plain string"
    assert records["s3"]["fields"]["value"] == []
    assert records["s4"]["fields"]["value"] is None and "json_null" not in records["s4"]  # SQL NULL
    assert records["s5"]["fields"]["value"] == S5  # a str, not a dict
    text = json.dumps(records["s1"])
    assert "None" not in text and "False" not in text and "'" not in text.replace("it's", "")


def test_restore_into_an_empty_database_keeps_every_type():
    records = export(make())
    restore(records, using="other")
    got = dict(Setting.objects.using("other").values_list("key", "value"))
    assert got["s1"] == S1 and got["s1"]["a"] is None and got["s1"]["b"] is False
    assert got["s2"] == "plain string" and got["s3"] == []
    assert Setting.objects.using("other").filter(key="s4", value__isnull=True).exists()
    assert isinstance(got["s5"], str) and got["s5"] == S5


def test_a_json_null_is_marked_apart_from_sql_null():
    p = Profile.objects.create(name="q")
    Setting.objects.create(owner=p, key="jn", value=Value(None, JSONField()))
    Setting.objects.create(owner=p, key="sn", value=None)
    records = {r["fields"]["key"]: r for r in export(p) if r["model"] == "app.setting"}
    assert records["jn"]["json_null"] == ["value"] and "json_null" not in records["sn"]


def test_restore_keeps_a_json_null_apart_from_sql_null():
    p = Profile.objects.create(name="q")
    Setting.objects.create(owner=p, key="jn", value=Value(None, JSONField()))
    restore(export(p), using="other")
    assert Setting.objects.using("other").filter(key="jn", value=Value(None, JSONField())).exists()
    assert not Setting.objects.using("other").filter(key="jn", value__isnull=True).exists()
