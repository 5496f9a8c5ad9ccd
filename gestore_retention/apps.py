"""AppConfig of gestore_retention."""
from django.apps import AppConfig
from django.core import checks


def check_policies(app_configs=None, **kwargs):
    """System check: every policy file in POLICY_DIRS loads and validates.

    Runs at start-up of every management command that checks (and of the
    server), so an invalid policy is reported before any run, naming the
    file and the key.
    """
    from .errors import PolicyError
    from .policy import load_policies

    try:
        load_policies()
    except PolicyError as exc:
        return [checks.Error(str(exc), id="gestore_retention.E001")]
    return []


class GestoreRetentionConfig(AppConfig):
    name = "gestore_retention"
    verbose_name = "Retention"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        checks.register(check_policies, "gestore_retention")
