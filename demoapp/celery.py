"""The Celery application of the demo deployment."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demoapp.settings")

app = Celery("demoapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
