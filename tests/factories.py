"""A small, explicit tenant graph touching every relation kind of the demo."""
import datetime as dt
from decimal import Decimal

from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.utils import timezone

from demoapp import models as m

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def currency():
    return m.Currency.objects.get_or_create(code="EUR", defaults={"name": "Euro"})[0]


def tenant(slug, *, status="churned", churned_days=200, files=False, users=None):
    """Create one organisation with members, projects, documents and invoices."""
    eur = currency()
    users = users or [
        User.objects.create(username=f"{slug}-owner", email=f"{slug}@example.org"),
        User.objects.create(username=f"{slug}-member"),
    ]
    org = m.Organisation.objects.create(
        name=f"Org {slug}", slug=slug, status=status, created_at=T0,
        churned_at=timezone.now() - dt.timedelta(days=churned_days) if status == "churned" else None,
        owner=users[0], settings={"a": None, "b": False, "c": [1, 2.5, "x"], "d": {"e": "it's"}},
        monthly_price=Decimal("19.90"),
    )
    for i, u in enumerate(users):
        m.Membership.objects.create(org=org, user=u, role="owner" if i == 0 else "member",
                                    joined_on=dt.date(2025, 1, 1 + i))
        profile, _ = m.Profile.objects.get_or_create(user=u)
        profile.current_org = org
        profile.save()
    tag, _ = m.Tag.objects.get_or_create(name="shared")
    own_tag, _ = m.Tag.objects.get_or_create(name=f"tag-{slug}")
    project = m.Project.objects.create(org=org, name="P1", lead=users[1], budget=Decimal("123456.78"),
                                       starts_on=dt.date(2026, 2, 3), estimate=dt.timedelta(days=3, microseconds=5))
    project.tags.add(tag, own_tag)
    m.Task.objects.create(org=org, project=project, title="t1", due_at=dt.time(9, 30, 0, 250))
    doc = m.Document.objects.create(project=project, title="plain", body="hello", checksum=b"\x00\xffab",
                                    created_at=T0)
    sheet = m.Spreadsheet.objects.create(project=project, title="sheet", rows=7, formulas=["=A1"],
                                         created_at=T0)
    if files:
        doc.attachment.save(f"{slug}.txt", ContentFile(b"%PDF-1.4\n% fixture\n"), save=True)
    c1 = m.Comment.objects.create(document=doc, author=users[1], body="first", created_at=T0)
    m.Comment.objects.create(document=doc, parent=c1, author=users[0], body="reply", created_at=T0)
    m.Comment.objects.create(document=sheet, body="on sheet", created_at=T0)
    m.Reaction.objects.create(target=doc, user=users[0], emoji="+1")
    m.Reaction.objects.create(target=project, emoji="eyes")
    inv = m.Invoice.objects.create(org=org, number=f"{slug}-1", currency=eur, total=Decimal("19.90"), issued_at=T0)
    m.Payment.objects.create(invoice=inv, amount=Decimal("19.90"), received_at=T0, reference="r1")
    return org
