"""Models of the real-world failure cases, exactly as the cases give them.

One test app (label "app") for every case; each case's test lives in
tests/test_case_brNN.py. Migrations are needed: the models point at auth and contenttypes.
"""
from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.signals import post_save
from django.dispatch import receiver


# BR-01: circular and self-referential FKs inserted before their targets
class Thread(models.Model):
    title = models.CharField(max_length=100)


class Post(models.Model):
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="posts")
    body = models.TextField()
    reply_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies")
    newest_reply = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")


class PinnedPost(Post):
    pinned_until = models.DateField()


# BR-03: ContentType ids differ between source and target
class Note(models.Model):
    text = models.CharField(max_length=200)
    marks = GenericRelation("Mark")


class Mark(models.Model):
    label = models.CharField(max_length=30)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")


# BR-05: sequences not advanced after explicit pks
class Company(models.Model):
    name = models.CharField(max_length=80)


class Office(models.Model):
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="offices")
    city = models.CharField(max_length=80)


class Place(models.Model):
    label = models.CharField(max_length=80)


class Venue(Place):
    capacity = models.IntegerField()


# BR-06: a post_save receiver creates a OneToOne row during import
class Account(models.Model):
    login = models.CharField(max_length=40, unique=True)


class Preferences(models.Model):
    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="prefs")
    data = models.JSONField(default=dict)


@receiver(post_save, sender=Account)
def ensure_prefs(sender, instance, created, **kwargs):
    if created:  # deliberately no `raw` check
        Preferences.objects.create(account=instance)


# BR-09: proxy-model root
class Person(models.Model):
    name = models.CharField(max_length=60)


class Agent(Person):
    class Meta:
        proxy = True


class Badge(models.Model):
    holder = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="badges")
    code = models.CharField(max_length=10)


# BR-12: M2M through model and automatic through
class Musician(models.Model):
    name = models.CharField(max_length=50)


class Band(models.Model):
    name = models.CharField(max_length=50)
    members = models.ManyToManyField(Musician, through="Membership", related_name="bands")
    fans = models.ManyToManyField(Musician, related_name="fan_of", blank=True)


class Membership(models.Model):
    band = models.ForeignKey(Band, on_delete=models.CASCADE)
    musician = models.ForeignKey(Musician, on_delete=models.CASCADE)
    instrument = models.CharField(max_length=30)
    since = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["band", "musician"], name="one_membership")]


# BR-13: JSON values round-trip by type
class Profile(models.Model):
    name = models.CharField(max_length=40)


class Setting(models.Model):
    owner = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="settings")
    key = models.CharField(max_length=40)
    value = models.JSONField(null=True)


# BR-15: CompositePrimaryKey
class Order(models.Model):
    number = models.CharField(max_length=12, unique=True)


class OrderLine(models.Model):
    pk = models.CompositePrimaryKey("order_id", "line_no")
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    line_no = models.PositiveIntegerField()
    qty = models.IntegerField()


# BR-16: unique username conflict
class UserPost(models.Model):
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="case_posts")
    text = models.TextField()


# BR-18: file content exported
class Doc(models.Model):
    title = models.CharField(max_length=50)
    attachment = models.FileField(upload_to="docs/")
    thumb = models.FileField(upload_to="thumbs/", blank=True)  # ImageField needs Pillow; same storage path


# BR-19: PROTECT reached through a cascade
class Region(models.Model):
    name = models.CharField(max_length=40)


class Store(models.Model):
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="stores")
    name = models.CharField(max_length=40)


class Invoice(models.Model):
    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="invoices")
    number = models.CharField(max_length=20)


# BR-25: bounded memory, exact Decimal totals
class Ledger(models.Model):
    name = models.CharField(max_length=40)


class Entry(models.Model):
    ledger = models.ForeignKey(Ledger, on_delete=models.CASCADE, related_name="entries")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    memo = models.CharField(max_length=200)


# -- Issue 3: relation kinds the walk must get right ---------------------------
# Box is the subject; each model below adds one kind of relation to it.
import uuid  # noqa: E402  (appended section)


class Box(models.Model):
    code = models.CharField(max_length=20, unique=True)
    labels = GenericRelation("Label", content_type_field="kind", object_id_field="ref")
    trail = GenericRelation("AuditTrail", object_id_field="object_pk")


class Label(models.Model):
    """A GenericForeignKey with custom field names and a char object id."""

    kind = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    ref = models.CharField(max_length=40)
    target = GenericForeignKey("kind", "ref")
    text = models.CharField(max_length=40)


class AuditTrail(models.Model):
    """What audit apps write: content_type + text object_pk (here with a GenericRelation)."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_pk = models.TextField()
    target = GenericForeignKey("content_type", "object_pk")
    action = models.CharField(max_length=20)


class History(models.Model):
    """A soft generic relation: content_type + text object_pk and no GenericRelation back."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_pk = models.TextField()
    changes = models.JSONField(default=dict)


class Usage(models.Model):
    """A soft relation: an integer tenant column without a foreign key."""

    tenant_id = models.IntegerField(db_index=True)
    units = models.IntegerField(default=0)


class BoxPart(models.Model):
    """An abstract base holding the FK and a generic relation."""

    box = models.ForeignKey(Box, on_delete=models.CASCADE, related_name="%(class)ss")
    labels = GenericRelation(Label, content_type_field="kind", object_id_field="ref")

    class Meta:
        abstract = True


class Lid(BoxPart):
    color = models.CharField(max_length=20)


class Hinge(BoxPart):
    size = models.IntegerField(default=1)


class VisibleManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(hidden=False)


class Slip(models.Model):
    """Rows hidden by a filtering default manager."""

    box = models.ForeignKey(Box, on_delete=models.CASCADE, related_name="slips")
    hidden = models.BooleanField(default=False)
    objects = VisibleManager()


class Sku(models.Model):
    code = models.CharField(max_length=12, primary_key=True)


class Crate(models.Model):
    """A UUID pk, and an FK to a unique non-pk column (to_field)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    box = models.ForeignKey(Box, to_field="code", on_delete=models.CASCADE, related_name="crates")


class Bottle(models.Model):
    """An FK to a UUID pk and an FK to a char pk."""

    crate = models.ForeignKey(Crate, on_delete=models.CASCADE, related_name="bottles")
    sku = models.ForeignKey(Sku, on_delete=models.PROTECT, related_name="bottles")


class Slot(models.Model):
    """A composite pk, with a SET_NULL pointer."""

    pk = models.CompositePrimaryKey("box_id", "n")
    box = models.ForeignKey(Box, on_delete=models.CASCADE, related_name="slots")
    n = models.PositiveIntegerField()
    sku = models.ForeignKey(Sku, null=True, blank=True, on_delete=models.SET_NULL, related_name="slots")


class Locker(models.Model):
    """An FK to the swappable user model."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lockers")
    box = models.ForeignKey(Box, null=True, blank=True, on_delete=models.SET_NULL, related_name="lockers")


class Specimen(models.Model):
    """Every built-in field type, for the records' exact round trip."""

    box = models.ForeignKey(Box, null=True, blank=True, on_delete=models.CASCADE, related_name="specimens")
    dec = models.DecimalField(max_digits=15, decimal_places=6, null=True)
    at = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    clock = models.TimeField(null=True)
    span = models.DurationField(null=True)
    doc = models.JSONField(null=True)
    strict_doc = models.JSONField(default=dict)
    blob = models.BinaryField(null=True)
    uid = models.UUIDField(null=True)
    big = models.BigIntegerField(null=True)
    pbig = models.PositiveBigIntegerField(null=True)
    small = models.SmallIntegerField(null=True)
    flag = models.BooleanField(null=True)
    ratio = models.FloatField(null=True)
    text = models.TextField(blank=True)
    ip = models.GenericIPAddressField(null=True)
    email = models.EmailField(blank=True)
    url = models.URLField(blank=True)
    file = models.FileField(upload_to="specimens/", blank=True)


# -- Property tests: one small family, every relation kind ---------------------
# tests/test_walk_properties.py draws random rows over these models (how many,
# which row points at which, which relations are null, which rows are the
# subjects) and checks the walk against Django's Collector. A Realm is the
# usual subject; the other models reach it, and each other, through one kind
# of relation each.


def nobody():
    """The value SET(...) writes: a callable, as a migration can serialise it."""
    return None


class Realm(models.Model):
    code = models.CharField(max_length=20, unique=True)
    tags = GenericRelation("Tag")
    allies = models.ManyToManyField("Node", through="Pact", related_name="allied_realms", blank=True)


class Node(models.Model):
    realm = models.ForeignKey(Realm, on_delete=models.CASCADE, related_name="nodes")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    buddy = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    patron = models.ForeignKey(Realm, null=True, blank=True, default=None, on_delete=models.SET_DEFAULT,
                               related_name="patronised")
    sponsor = models.ForeignKey(Realm, null=True, blank=True, on_delete=models.SET(nobody), related_name="sponsored")
    home = models.ForeignKey(Realm, to_field="code", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="residents")
    watchers = models.ManyToManyField(Realm, related_name="watching", blank=True)
    tags = GenericRelation("Tag")


class Hub(Node):
    """Multi-table inheritance, with a column of its own table pointing at a realm."""

    mentor = models.ForeignKey(Realm, null=True, blank=True, on_delete=models.SET_NULL, related_name="mentees")


class Seal(models.Model):
    """One-to-one both ways: deleted with its node, cleared when its witness goes."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="seal")
    witness = models.OneToOneField(Realm, null=True, blank=True, on_delete=models.SET_NULL, related_name="witnessed")


class Guard(models.Model):
    realm = models.ForeignKey(Realm, on_delete=models.CASCADE, related_name="guards")
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.PROTECT, related_name="guards")


class Lock(models.Model):
    realm = models.ForeignKey(Realm, on_delete=models.CASCADE, related_name="locks")
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.RESTRICT, related_name="locks")


class Memo(models.Model):
    """DO_NOTHING without a constraint: the node it names may be gone."""

    realm = models.ForeignKey(Realm, on_delete=models.CASCADE, related_name="memos")
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                             related_name="memos")


class Tag(models.Model):
    """A GenericForeignKey: at a realm or a node (GenericRelation back), a guard (none), or a stale id."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")


class Pact(models.Model):
    """The through model of Realm.allies."""

    realm = models.ForeignKey(Realm, on_delete=models.CASCADE, related_name="pacts")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="pacts")
    terms = models.CharField(max_length=20, blank=True)
