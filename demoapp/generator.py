"""Deterministic demo data for the demo deployment.

`generate(tenants=12, scale=1, seed=42, now=...)` fills an empty database with
organisations and everything that hangs off them, using every relation kind
of `demoapp.models`. The same seed and `now` give the same rows, the same
values and the same files (auto-increment primary keys aside: they depend on
the database's sequences). All dates are relative to `now`.

Status mix, for n tenants (shuffled with the seed):
  * long churned: max(1, (n + 2) // 4), churned 120-400 days before `now`;
    exactly one of them is placed under legal hold;
  * recently churned: n // 6 (at least 1 when n >= 3), churned 10-60 days ago;
  * active: the rest (about half).

Per tenant and unit of `scale`: ~5 members (some users belong to two
organisations), 3-5 projects with tags, 6-12 tasks and 3-6 documents per
project (a fifth are spreadsheets, a quarter carry a small file), threaded
comments, reactions on documents and projects, 6-18 invoices with payments.
Scale 1 is a few hundred rows per tenant, scale 10 a few thousand.
"""
import hashlib
import random
import uuid
from datetime import time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from demoapp.models import (
    Comment,
    Currency,
    Document,
    Invoice,
    Membership,
    Organisation,
    Payment,
    Profile,
    Project,
    Reaction,
    Spreadsheet,
    Tag,
    Task,
)
from gestore_retention.models import LegalHold

HOLD_REASON = "case-2026-17"
CURRENCIES = [("EUR", "Euro"), ("USD", "US dollar"), ("GBP", "Pound sterling")]
TAGS = ["backend", "frontend", "urgent", "research", "design", "legal", "ops", "finance", "mobile", "data"]
FIRST = ["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Giulia", "Hana", "Ivo", "Jun",
         "Kofi", "Lena", "Marco", "Nadia", "Omar", "Paola", "Quinn", "Rosa", "Sven", "Tariq"]
LAST = ["Rossi", "Bianchi", "Okafor", "Novak", "Tanaka", "Silva", "Müller", "Dubois", "Kowalski",
        "Haddad", "Larsen", "Moreau", "Ferrari", "Ivanova", "Costa", "Nguyen"]
ADJ = ["amber", "brisk", "cobalt", "dapper", "ember", "fable", "granite", "harbor", "indigo",
       "juniper", "kestrel", "lumen", "maple", "nimbus", "onyx", "pollen"]
NOUN = ["labs", "works", "systems", "studio", "logistics", "health", "foods", "analytics",
        "robotics", "media", "travel", "energy"]
WORDS = ("retention policy export bundle restore verify audit tenant invoice schedule review "
         "draft budget milestone sprint roadmap release contract meeting notes summary").split()
EMOJI = ["👍", "🎉", "❤️", "👀", "🚀", "✅", "😄"]
TIMEZONES = ["UTC", "Europe/Rome", "Europe/London", "America/New_York", "Asia/Tokyo"]
ROLES = ["admin", "member", "member", "member", "viewer"]

BATCH = 1000


class GeneratorError(Exception):
    """The demo data cannot be generated (bad arguments or a non-empty database)."""


def status_plan(tenants):
    """Return how many tenants are (active, long churned, recently churned)."""
    long_churned = max(1, (tenants + 2) // 4)
    recent = tenants // 6 if tenants >= 6 else (1 if tenants >= 3 else 0)
    active = tenants - long_churned - recent
    return active, long_churned, recent


def generate(*, tenants, scale=1, seed=0, now=None, using="default", storage=None):
    """Fill the database `using` with demo data; return the number of rows per model label.

    The result maps model labels (and "files" for stored attachments) to the
    number of rows created. Raises GeneratorError on bad arguments or when the
    database already holds organisations.
    """
    if tenants < 1:
        raise GeneratorError(f"tenants must be at least 1, got {tenants}")
    if scale < 1:
        raise GeneratorError(f"scale must be at least 1, got {scale}")
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise GeneratorError("now must be an aware datetime")
    storage = storage or default_storage
    if Organisation.objects.using(using).exists():
        raise GeneratorError(
            "the database already holds organisations; gendemo fills an empty database "
            "(`make demo` recreates var/ first)"
        )
    with transaction.atomic(using=using):
        return _Generator(random.Random(seed), now, scale, using, storage).run(tenants)


class _Generator:
    def __init__(self, rng, now, scale, using, storage):
        self.rng, self.now, self.scale, self.using, self.storage = rng, now, scale, using, storage
        self.counts = {}

    # -- helpers ---------------------------------------------------------------

    def ago(self, low_days, high_days):
        """A datetime between low_days and high_days before now, to the second."""
        seconds = self.rng.randint(int(low_days * 86400), int(high_days * 86400))
        return self.now - timedelta(seconds=seconds)

    def money(self, low, high):
        return Decimal(self.rng.randint(low * 100, high * 100)) / 100

    def sentence(self, low=4, high=12):
        words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(low, high))]
        return " ".join(words).capitalize() + "."

    def save(self, model, objs):
        """bulk_create `objs` and make sure each has its primary key afterwards."""
        manager = model._base_manager.db_manager(self.using)
        label = model._meta.label
        self.counts[label] = self.counts.get(label, 0) + len(objs)
        if not objs:
            return objs
        auto_pk = model._meta.pk.get_internal_type() in ("AutoField", "BigAutoField", "SmallAutoField")
        before = None
        if auto_pk:
            before = manager.order_by("-pk").values_list("pk", flat=True).first() or 0
        manager.bulk_create(objs, batch_size=BATCH)
        if auto_pk and objs[0].pk is None:
            # Backends that cannot return ids from a bulk insert (MySQL):
            # ids are consecutive and in insertion order for a single writer.
            pks = list(manager.filter(pk__gt=before).order_by("pk").values_list("pk", flat=True))
            if len(pks) != len(objs):
                raise GeneratorError(f"could not read back the ids of {label} (concurrent writer?)")
            for obj, pk in zip(objs, pks):
                obj.pk = pk
        return objs

    # -- the data --------------------------------------------------------------

    def run(self, tenants):
        rng = self.rng
        currencies = self.save(Currency, [Currency(code=c, name=n) for c, n in CURRENCIES])
        tags = self.save(Tag, [Tag(name=t) for t in TAGS])

        active, long_churned, recent = status_plan(tenants)
        kinds = ["active"] * active + ["long"] * long_churned + ["recent"] * recent
        rng.shuffle(kinds)
        held_index = rng.choice([i for i, k in enumerate(kinds) if k == "long"])

        # Organisations and their members. A user joins at most two organisations.
        User = get_user_model()
        users, orgs, memberships, owners = [], [], [], []
        user_orgs = {}  # user index -> [org index]
        for i, kind in enumerate(kinds):
            if kind == "active":
                created = self.ago(30, 1500)
                churned = None
            else:
                churned = self.ago(120, 400) if kind == "long" else self.ago(10, 60)
                created = churned - timedelta(days=rng.randint(90, 1200), seconds=rng.randint(0, 86399))
            name = f"{rng.choice(ADJ).capitalize()} {rng.choice(NOUN).capitalize()}"
            org = Organisation(
                name=name,
                slug=f"{name.lower().replace(' ', '-')}-{i + 1:03d}",
                status=Organisation.ACTIVE if kind == "active" else Organisation.CHURNED,
                created_at=created,
                churned_at=churned,
                settings={
                    "plan": rng.choice(["free", "team", "business"]),
                    "locale": rng.choice(["en", "it", "de", "fr"]),
                    "features": sorted(rng.sample(["sso", "audit", "api", "export", "beta"], rng.randint(0, 3))),
                },
                monthly_price=self.money(0, 900),
            )
            orgs.append(org)

            member_ids = []
            for _ in range(rng.randint(3, 6) * self.scale):
                n = len(users)
                first, last = rng.choice(FIRST), rng.choice(LAST)
                username = f"{first.lower()}.{last.lower()}.{n + 1}"
                users.append(User(
                    username=username,
                    first_name=first,
                    last_name=last,
                    email=f"{username}@example.com",
                    password="!" + "%032x" % rng.getrandbits(128),  # unusable, but deterministic
                    date_joined=created + timedelta(days=rng.randint(0, 60)),
                    is_active=True,
                ))
                member_ids.append(n)
            # Some users of earlier organisations join this one too.
            candidates = [u for u, o in user_orgs.items() if len(o) == 1]
            for u in rng.sample(candidates, min(len(candidates), rng.randint(0, 2))):
                member_ids.append(u)
            owners.append(member_ids[0])
            for position, u in enumerate(member_ids):
                user_orgs.setdefault(u, []).append(i)
                memberships.append((i, u, "owner" if position == 0 else rng.choice(ROLES)))

        self.save(User, users)
        for org, u in zip(orgs, owners):
            org.owner = users[u]
        self.save(Organisation, orgs)

        member_rows = []
        for o, u, role in memberships:
            org = orgs[o]
            joined = org.created_at.date() + timedelta(days=rng.randint(0, 90))
            member_rows.append(Membership(org=org, user=users[u], role=role, joined_on=joined))
        self.save(Membership, member_rows)

        # Each user's profile points at one of their organisations: erasing
        # that organisation sets it to NULL (an "update" in the bundle).
        self.save(Profile, [
            Profile(user=user, current_org=orgs[rng.choice(user_orgs[u])], timezone=rng.choice(TIMEZONES))
            for u, user in enumerate(users)
        ])

        members_of = {}
        for o, u, _role in memberships:
            members_of.setdefault(o, []).append(users[u])

        projects, project_tags, tasks, docs, sheets = [], [], [], [], []
        invoices, payments = [], []
        for i, org in enumerate(orgs):
            members = members_of[i]
            end = org.churned_at or self.now
            life_days = max(1, (end - org.created_at).days)
            for p in range(rng.randint(3, 5) * self.scale):
                project = Project(
                    org=org,
                    name=f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS)} {p + 1}",
                    lead=rng.choice(members) if rng.random() < 0.8 else None,
                    budget=self.money(1_000, 250_000),
                    starts_on=(org.created_at + timedelta(days=rng.randint(0, life_days))).date(),
                    estimate=timedelta(hours=rng.randint(4, 800), minutes=rng.choice([0, 15, 30, 45])),
                )
                projects.append(project)
                for tag in rng.sample(tags, rng.randint(0, 3)):
                    project_tags.append((project, tag))
                for t in range(rng.randint(6, 12)):
                    tasks.append(Task(
                        org=org,
                        project=project,
                        title=f"{self.sentence(2, 6)[:-1]} #{t + 1}",
                        done=rng.random() < 0.6,
                        due_at=time(rng.randint(8, 18), rng.choice([0, 30])) if rng.random() < 0.5 else None,
                    ))
                for d in range(rng.randint(3, 6)):
                    is_sheet = rng.random() < 0.2
                    body = " ".join(self.sentence() for _ in range(rng.randint(1, 4)))
                    fields = dict(
                        project=project,
                        title=f"{org.slug} p{p + 1} {'sheet' if is_sheet else 'doc'} {d + 1}",
                        body=body,
                        created_at=self.ago(0, life_days) if org.churned_at is None
                        else org.churned_at - timedelta(seconds=rng.randint(0, life_days * 86400)),
                    )
                    content = body.encode()
                    if rng.random() < 0.25:
                        content = f"{fields['title']}\n{body}\n".encode()
                        fields["attachment"] = (f"docs/{org.slug}/p{p + 1}-d{d + 1}.txt", content)
                    fields["checksum"] = hashlib.sha256(content).digest()
                    if is_sheet:
                        fields["rows"] = rng.randint(1, 5000)
                        fields["formulas"] = [f"=SUM(A1:A{rng.randint(2, 99)})" for _ in range(rng.randint(0, 3))]
                        sheets.append(fields)
                    else:
                        docs.append(fields)
            for n in range(rng.randint(6, 18) * self.scale):
                issued = org.created_at + timedelta(days=rng.randint(0, life_days), seconds=rng.randint(0, 86399))
                paid = rng.random() < 0.75
                invoice = Invoice(
                    id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    org=org,
                    number=f"INV-{issued.year}-{i + 1:03d}-{n + 1:04d}",
                    currency=rng.choice(currencies),
                    total=self.money(20, 5_000),
                    issued_at=issued,
                    paid_on=(issued + timedelta(days=rng.randint(1, 45))).date() if paid else None,
                )
                invoices.append(invoice)
                if paid:
                    amounts = [invoice.total]
                    if rng.random() < 0.2:  # paid in two instalments
                        half = (invoice.total / 2).quantize(Decimal("0.01"))
                        amounts = [half, invoice.total - half]
                    for k, amount in enumerate(amounts):
                        payments.append(Payment(
                            invoice=invoice,
                            amount=amount,
                            received_at=issued + timedelta(days=rng.randint(1, 45), minutes=k),
                            reference=f"PAY-{rng.getrandbits(48):012x}",
                        ))

        self.save(Project, projects)
        Through = Project.tags.through
        self.save(Through, [Through(project=p, tag=t) for p, t in project_tags])
        self.save(Task, tasks)

        files = 0
        document_objs = []
        for fields in docs:
            fields = dict(fields)
            if "attachment" in fields:
                fields["attachment"] = self.store(*fields["attachment"])
                files += 1
            document_objs.append(Document(**fields))
        self.save(Document, document_objs)
        # Multi-table inheritance cannot be bulk-created: one save each.
        for fields in sheets:
            fields = dict(fields)
            if "attachment" in fields:
                fields["attachment"] = self.store(*fields["attachment"])
                files += 1
            sheet = Spreadsheet(**fields)
            sheet.save(using=self.using)
            document_objs.append(sheet)
        self.counts["demoapp.Document"] += len(sheets)
        self.counts["demoapp.Spreadsheet"] = len(sheets)
        self.counts["files"] = files

        # Threaded comments, inserted level by level so replies know their parent's id.
        org_index = {id(org): i for i, org in enumerate(orgs)}
        author_pool = {id(p): members_of[org_index[id(p.org)]] for p in projects}
        comments, thread = [], {}
        for doc in document_objs:
            pool = author_pool[id(doc.project)]
            for _ in range(rng.randint(1, 6)):
                is_reply = bool(thread.get(id(doc))) and rng.random() < 0.5
                comment = Comment(
                    document=doc,
                    author=rng.choice(pool) if rng.random() < 0.9 else None,
                    body=self.sentence(3, 20),
                    created_at=doc.created_at + timedelta(minutes=rng.randint(1, 60 * 24 * 30)),
                )
                if is_reply:
                    comment.parent = rng.choice(thread[id(doc)])
                thread.setdefault(id(doc), []).append(comment)
                comments.append(comment)
        # A comment's parent always comes earlier in `comments`; save by depth.
        depth_of = {}
        for c in comments:
            depth_of[id(c)] = 0 if c.parent is None else depth_of[id(c.parent)] + 1
        for depth in range(max(depth_of.values(), default=-1) + 1):
            self.save(Comment, [c for c in comments if depth_of[id(c)] == depth])

        # Reactions (GenericForeignKey) on documents and projects.
        doc_ct = ContentType.objects.db_manager(self.using).get_for_model(Document)
        project_ct = ContentType.objects.db_manager(self.using).get_for_model(Project)
        reactions = []
        for ct, targets in ((project_ct, projects), (doc_ct, document_objs)):
            for target in targets:
                pool = author_pool[id(target if ct is project_ct else target.project)]
                for _ in range(rng.randint(0, 4)):
                    reactions.append(Reaction(
                        content_type=ct, object_id=target.pk,
                        user=rng.choice(pool) if rng.random() < 0.95 else None,
                        emoji=rng.choice(EMOJI),
                    ))
        self.save(Reaction, reactions)

        self.save(Invoice, invoices)
        self.save(Payment, payments)

        held = orgs[held_index]
        self.save(LegalHold, [LegalHold(
            subject_label=Organisation._meta.label, subject_pk=str(held.pk),
            reason=HOLD_REASON, placed_at=self.now,
        )])
        return dict(sorted(self.counts.items()))

    def store(self, name, content):
        """Save a file through the storage; return the name it got."""
        return self.storage.save(name, ContentFile(content))
