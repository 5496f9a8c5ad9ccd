"""BR-03: content type ids differ between source and target; GFKs are matched by (app_label, model)."""
import pytest
from django.contrib.contenttypes.models import ContentType

from gestore_retention.restore import restore
from tests.caseapp.models import Mark, Note
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)


def shuffle_note_content_type():
    """In "other": (app, note) gets a new, higher id; its source id belongs to another model."""
    source_id = ContentType.objects.db_manager("default").get(app_label="app", model="note").pk
    ContentType.objects.db_manager("other").filter(app_label="app", model="note").delete()
    if not ContentType.objects.db_manager("other").filter(pk=source_id).exists():
        ContentType.objects.db_manager("other").create(pk=source_id, app_label="app", model="filler")
    ContentType.objects.db_manager("other").create(app_label="app", model="note")
    ContentType.objects.clear_cache()
    return source_id


@pytest.mark.parametrize("mode", ["fail", "remap"])
def test_marks_point_at_the_targets_content_type(mode):
    n = Note.objects.create(text="hello")
    Mark.objects.create(label="star", target=n)
    Mark.objects.create(label="flag", target=n)
    records, _, _ = export_roots(n)
    source_id = shuffle_note_content_type()
    ct_count = ContentType.objects.using("other").count()

    restore(records, using="other", mode=mode)

    ct = ContentType.objects.db_manager("other").get_for_model(Note)
    assert ct.pk != source_id
    note = Note.objects.using("other").get()
    assert Mark.objects.using("other").count() == 2
    assert set(Mark.objects.using("other").values_list("content_type", flat=True)) == {ct.pk}
    assert set(Mark.objects.using("other").values_list("object_id", flat=True)) == {note.pk}
    assert note.marks.count() == 2
    assert ContentType.objects.using("other").count() == ct_count
