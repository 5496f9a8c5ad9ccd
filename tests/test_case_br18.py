"""BR-18: a FileField's bytes travel with the bundle and land in the target storage."""
import json
import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from gestore_retention.graph.walk import Scope, walk
from gestore_retention.records import Export
from gestore_retention.restore import restore
from tests.caseapp.models import Doc

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)

DATA = b"%PDF-1.4\n% held-out fixture\n"


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_file_bytes_are_exported_and_restored_into_another_media_root(settings, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    settings.MEDIA_ROOT = str(a)
    d = Doc(title="r")
    d.attachment.save("report.pdf", ContentFile(DATA))
    assert d.attachment.name == "docs/report.pdf"
    records = json.loads(json.dumps(list(Export(walk([d])).records())))
    files = [r for r in records if r["role"] == "file"]
    assert [list(r["fields"]) for r in files] == [["attachment"]]  # nothing for the empty thumb
    assert files[0]["fields"]["attachment"]["name"] == "docs/report.pdf"

    settings.MEDIA_ROOT = str(b)
    b.mkdir()
    restore(records, using="other")

    restored = Doc.objects.using("other").get()
    assert restored.attachment.name == "docs/report.pdf"
    assert default_storage.location == str(b)
    with restored.attachment.open("rb") as fh:
        assert fh.read() == DATA
    assert restored.thumb.name == ""
    assert files_under(b) == ["docs/report.pdf"]
    row = Doc.objects.using("other").values_list("attachment", "thumb").get()
    assert not any(str(a) in value for value in row)


def test_a_scope_can_leave_the_bytes_out(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    d = Doc(title="r")
    d.attachment.save("report.pdf", ContentFile(DATA))
    records = list(Export(walk([d], scope=Scope(include_files=False))).records())
    assert not [r for r in records if r["role"] == "file"]
    assert [r["fields"]["attachment"] for r in records if r["model"] == "app.doc"] == ["docs/report.pdf"]
