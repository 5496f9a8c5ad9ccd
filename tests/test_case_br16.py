"""BR-16: a unique username taken by another row: the restore fails, naming model, field and value."""
import pytest
from django.contrib.auth.models import User

from gestore_retention.restore import ConflictError, restore
from tests.caseapp.models import UserPost
from tests.test_restore import export_roots

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)


@pytest.mark.parametrize("mode", ["fail", "skip-identical", "override", "remap"])
def test_username_taken_in_the_target(mode):
    admin = User.objects.create(pk=4, username="admin", email="a@example.org")
    UserPost.objects.create(author=admin, text="one")
    UserPost.objects.create(author=admin, text="two")
    records, _, _ = export_roots(admin)
    mine = User.objects.using("other").create(pk=1, username="admin", email="b@example.org")
    UserPost.objects.using("other").create(author=mine, text="mine")

    with pytest.raises(ConflictError) as exc:
        restore(records, using="other", mode=mode)

    message = str(exc.value)
    assert "auth.User" in message and "username" in message and "'admin'" in message, message
    found = [(c.model, c.kind, c.fields, c.values, c.existing) for c in exc.value.conflicts]
    assert ("auth.User", "unique", ("username",), ("admin",), 1) in found
    # Whatever else collides is a pk of the posts (the target's post "mine" may hold pk 1).
    assert {c.model for c in exc.value.conflicts} <= {"auth.User", "app.UserPost"}
    assert list(User.objects.using("other").values_list("pk", "username", "email")) == [(1, "admin", "b@example.org")]
    assert list(UserPost.objects.using("other").values_list("text", flat=True)) == ["mine"]
