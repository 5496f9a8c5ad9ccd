"""AppConfig of gestore_retention."""
from django.apps import AppConfig


class GestoreRetentionConfig(AppConfig):
    name = "gestore_retention"
    verbose_name = "Retention"
    default_auto_field = "django.db.models.BigAutoField"
