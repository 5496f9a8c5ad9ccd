"""The demo deployment of gestore-retention: a small multi-tenant SaaS."""
# Load the Celery app whenever Django starts (web, shell, management
# commands), so shared tasks send through it and its CELERY_* settings.
from .celery import app as celery_app

__all__ = ("celery_app",)
