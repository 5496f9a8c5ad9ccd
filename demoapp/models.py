"""A small multi-tenant SaaS that uses every relation kind Django has.

Tenant: Organisation. Shared data: auth.User, Tag, Currency. Everything else
hangs off an organisation and goes when it is erased.

Relation kinds exercised (model.field -> target, on_delete):
  FK / reverse FK ........ Project.org -> Organisation, CASCADE
  OneToOne ............... Profile.user -> User, CASCADE
  M2M through model ...... Organisation.members via Membership (extra columns)
  M2M automatic .......... Project.tags -> Tag
  self-referential FK .... Comment.parent -> Comment (threaded comments)
  nullable FK cycle ...... Organisation.owner -> User, Membership.org -> Organisation
  GenericForeignKey ...... Reaction.target, GenericRelation on Document and Project
  multi-table inheritance  Spreadsheet(Document)
  proxy model ............ ChurnedOrganisation(Organisation)
  UUID primary key ....... Invoice.id
  char primary key ....... Currency.code
  FK with to_field ....... Invoice.org -> Organisation.slug
  SET_NULL ............... Profile.current_org, Comment.author, Project.lead
  PROTECT ................ Invoice.currency -> Currency
  RESTRICT ............... Task.project -> Project (allowed when the org cascades)
"""
import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models


class Organisation(models.Model):
    ACTIVE, CHURNED = "active", "churned"
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    status = models.CharField(
        max_length=10, choices=[(ACTIVE, "active"), (CHURNED, "churned")], default=ACTIVE
    )
    created_at = models.DateTimeField()
    churned_at = models.DateTimeField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="owned_organisations",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="organisations"
    )
    settings = models.JSONField(default=dict, blank=True)
    monthly_price = models.DecimalField(max_digits=10, decimal_places=2, default=0)

    def __str__(self):
        return self.name


class ChurnedManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(status=Organisation.CHURNED)


class ChurnedOrganisation(Organisation):
    """Proxy: the organisations that have churned."""

    objects = ChurnedManager()

    class Meta:
        proxy = True


class Membership(models.Model):
    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, default="member")
    joined_on = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="one_membership_per_org")]


class Profile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    current_org = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    timezone = models.CharField(max_length=40, default="UTC")


class Tag(models.Model):
    name = models.CharField(max_length=40, unique=True)

    def __str__(self):
        return self.name


class Currency(models.Model):
    code = models.CharField(max_length=3, primary_key=True)
    name = models.CharField(max_length=40)


class Project(models.Model):
    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=120)
    lead = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="led_projects",
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="projects")
    budget = models.DecimalField(max_digits=14, decimal_places=2)
    starts_on = models.DateField()
    estimate = models.DurationField()
    reactions = GenericRelation("Reaction", related_query_name="project")


class Task(models.Model):
    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="tasks")
    # RESTRICT: a project with tasks cannot be deleted on its own, but erasing
    # the organisation (which cascades to both) is allowed.
    project = models.ForeignKey(Project, on_delete=models.RESTRICT, related_name="tasks")
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    due_at = models.TimeField(null=True, blank=True)


class Document(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    attachment = models.FileField(upload_to="docs/", blank=True)
    checksum = models.BinaryField(max_length=32, blank=True, default=b"")
    created_at = models.DateTimeField()
    reactions = GenericRelation("Reaction", related_query_name="document")


class Spreadsheet(Document):
    """Multi-table inheritance: a Document row plus a Spreadsheet row."""

    rows = models.PositiveIntegerField(default=0)
    formulas = models.JSONField(default=list, blank=True)


class Comment(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="comments")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="comments",
    )
    body = models.TextField()
    created_at = models.DateTimeField()


class Reaction(models.Model):
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="reactions",
    )
    emoji = models.CharField(max_length=16)


class Invoice(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(
        Organisation, to_field="slug", on_delete=models.CASCADE, related_name="invoices"
    )
    number = models.CharField(max_length=20)
    currency = models.ForeignKey(Currency, on_delete=models.PROTECT, related_name="invoices")
    total = models.DecimalField(max_digits=12, decimal_places=2)
    issued_at = models.DateTimeField()
    paid_on = models.DateField(null=True, blank=True)


class Payment(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="payments")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    received_at = models.DateTimeField()
    reference = models.CharField(max_length=64, blank=True)
