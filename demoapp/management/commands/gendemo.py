"""`manage.py gendemo`: fill an empty database with deterministic demo tenants."""
from datetime import timezone as dt_timezone

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from demoapp.generator import GeneratorError, generate, status_plan
from gestore_retention.management.base import RetentionCommand


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive integer"


class Command(RetentionCommand):  # --database checked, one-line errors
    help = (
        "Fill an empty database with demo organisations (tenants) and everything that hangs "
        "off them: users shared across tenants, memberships, projects with tags, tasks, "
        "documents and spreadsheets with files, threaded comments, reactions, invoices and "
        "payments. About half the tenants are active, a quarter churned 120-400 days ago, a "
        "few churned 10-60 days ago; exactly one long-churned tenant is under legal hold. "
        "The same --seed and --now give the same data."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)  # --database: the alias to fill
        parser.add_argument(
            "--tenants", type=_positive_int, default=12, metavar="N",
            help="number of organisations to create (default: 12)",
        )
        parser.add_argument(
            "--scale", type=_positive_int, default=1, metavar="K",
            help="multiplies the rows per tenant: 1 is a few hundred, 10 a few thousand (default: 1)",
        )
        parser.add_argument(
            "--seed", type=int, default=42,
            help="seed of the random generator; the same seed gives the same data (default: 42)",
        )
        parser.add_argument(
            "--now", metavar="ISO-DATETIME",
            help="the moment all dates are relative to, e.g. 2026-06-01T00:00:00Z; "
                 "a naive value is taken as UTC (default: the current time)",
        )

    def handle(self, *args, tenants, scale, seed, now, database, **options):
        if now is not None:
            parsed = parse_datetime(now)
            if parsed is None:
                raise CommandError(f"--now: {now!r} is not an ISO 8601 datetime (e.g. 2026-06-01T00:00:00Z)")
            now = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt_timezone.utc)
        try:
            counts = generate(tenants=tenants, scale=scale, seed=seed, now=now, using=database)
        except GeneratorError as exc:
            raise CommandError(str(exc)) from exc

        active, long_churned, recent = status_plan(tenants)
        self.stdout.write(
            f"{tenants} tenants: {active} active, {long_churned} churned long ago "
            f"(1 under legal hold), {recent} churned recently (seed {seed}, scale {scale})"
        )
        width = max(len(label) for label in counts)
        for label, count in counts.items():
            self.stdout.write(f"  {label:<{width}}  {count:>8}")
        total = sum(n for label, n in counts.items() if label != "files")
        self.stdout.write(self.style.SUCCESS(f"  {'rows in all':<{width}}  {total:>8}"))
