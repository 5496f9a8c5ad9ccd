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
