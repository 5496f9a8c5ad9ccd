"""AppConfig of the demo deployment."""
from django.apps import AppConfig


class DemoAppConfig(AppConfig):
    name = "demoapp"
    verbose_name = "Demo SaaS"
    default_auto_field = "django.db.models.BigAutoField"
