"""AppConfig of the failure-case models: label "app", as the cases name it."""
from django.apps import AppConfig


class CaseAppConfig(AppConfig):
    name = "tests.caseapp"
    label = "app"
    default_auto_field = "django.db.models.AutoField"
