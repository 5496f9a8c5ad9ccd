"""What every gestore_retention command shares: object specs, errors, output.

Commands are thin: they parse options, call one library function and format
the result it returns. A RetentionError, an unknown --database alias or an
OSError (storage, disk) becomes one line on stderr and a non-zero exit
(CommandError); anything else is a bug and keeps its traceback.
"""
import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import IntegerField

from ..errors import ObjectSpecError, RetentionError
from ..graph import relations


def parse_object(spec):
    """Parse `<app_label>.<Model>.<pk>` into (concrete model, pk value).

    The pk is everything after the second dot, so UUIDs, char keys and keys
    containing dots are fine. Raise ObjectSpecError naming the spec.
    """
    parts = spec.split(".", 2)
    if len(parts) != 3 or not all(parts):
        raise ObjectSpecError(f"{spec!r}: expected <app_label>.<Model>.<pk>, e.g. demoapp.Organisation.42")
    app_label, model_name, raw_pk = parts
    try:
        model = relations.get_model(f"{app_label}.{model_name}")
    except ObjectSpecError:
        raise ObjectSpecError(f"{spec!r}: unknown model {app_label}.{model_name}") from None
    if isinstance(model._meta.pk, IntegerField) and not (raw_pk.isascii() and raw_pk.lstrip("-").isdigit()):
        # int() would read " 2" and a full-width "２" as 2: an integer key is written in ASCII digits.
        raise ObjectSpecError(f"{spec!r}: {raw_pk!r} is not a valid primary key for {model._meta.label} "
                              "(an integer, written in ASCII digits)")
    try:
        pk = model._meta.pk.to_python(raw_pk)
    except ValidationError:
        raise ObjectSpecError(f"{spec!r}: {raw_pk!r} is not a valid primary key for {model._meta.label}") from None
    try:
        model._meta.pk.run_validators(pk)  # e.g. an integer beyond the column's range
    except ValidationError as exc:
        raise ObjectSpecError(
            f"{spec!r}: {raw_pk!r} is not a valid primary key for {model._meta.label} ({' '.join(exc.messages)})"
        ) from None
    return model, pk


def add_database_argument(parser, *, default=DEFAULT_DB_ALIAS):
    """Add --database; subcommand parsers pass default=argparse.SUPPRESS so either place works."""
    parser.add_argument("--database", default=default,
                        help='Database alias to work on (default: "default").')


class RetentionCommand(BaseCommand):
    """Base of the commands: --database, and RetentionError -> CommandError."""

    def add_arguments(self, parser):
        add_database_argument(parser)

    def execute(self, *args, **options):
        using = options.get("database", DEFAULT_DB_ALIAS)
        if using not in connections.databases:
            raise CommandError(f"--database {using}: no such database alias in settings.DATABASES "
                               f"(there: {', '.join(sorted(connections.databases))})")
        try:
            return super().execute(*args, **options)
        except RetentionError as exc:
            raise CommandError(str(exc)) from exc
        except BrokenPipeError:  # `... | head`: the reader is gone, so is the output
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return None
        except OSError as exc:  # the machine, not the input: a full disk, a file where a directory should be
            where = f"{exc.filename}: " if exc.filename else ""
            raise CommandError(f"{where}{exc.strerror or exc}") from exc

    def objects(self, specs):
        return [parse_object(s) for s in specs]

    def table(self, rows, headers):
        """Write an aligned text table."""
        rows = [[str(c) for c in r] for r in rows]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
        self.stdout.write(line)
        self.stdout.write("  ".join("-" * w for w in widths))
        for r in rows:
            self.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths)))

    def plan_table(self, counts):
        """Write a {role: {label: n}} mapping as a table of models by role."""
        roles = ["owned", "updates", "references"]
        labels = sorted({lb for role in roles for lb in counts.get(role, {})})
        rows = [[lb] + [counts.get(role, {}).get(lb, "") for role in roles] for lb in labels]
        self.table(rows, ["model", *roles])

    def progress(self, done, total, text=""):
        """Show progress on stderr when it is a terminal, else one line per 10%."""
        if total <= 0:
            return
        stream = sys.stderr
        if stream.isatty():
            width = 30
            filled = int(width * done / total)
            stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text[:40]:<40}")
            if done == total:
                stream.write("\n")
            stream.flush()
        elif done == total or done % max(1, total // 10) == 0:
            self.stderr.write(f"{done}/{total} {text}")
