"""What every gestore_retention command shares: object specs, errors, output.

Commands are thin: they parse options, call one library function and format
the result it returns. A RetentionError, an unknown --database alias or an
OSError (storage, disk) becomes one line on stderr and a non-zero exit
(CommandError); anything else is a bug and keeps its traceback. A usage
error (argparse) is one line too: `manage.py <command>: error: ...`, exit 2.
"""
import argparse
import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
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


def positive(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def nonempty(text):
    """argparse type: a string that is not empty (a path, a hash)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def given(opts, option):
    """Whether `option` (e.g. "--dry-run") was given: not None, False or an empty list ("" counts)."""
    return opts.get(option.lstrip("-").replace("-", "_")) not in (None, False, [])


def refuse_combined(opts, *options):
    """Raise CommandError when two of `options` (e.g. "--debug", "--output") are given together."""
    on = [o for o in options if given(opts, o)]
    if len(on) > 1:
        raise CommandError(f"{on[0]} and {on[1]} cannot be combined")


class OneLineParser(CommandParser):
    """A CommandParser whose command-line errors are one line, `<prog>: error: ...` (exit 2), no usage block.

    Called programmatically (call_command) it raises CommandError as Django's does.
    """

    def error(self, message):
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)


class OneLineErrors:
    """Mixin for a BaseCommand: its parser and its subcommands' parsers are OneLineParsers."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        todo = [parser]
        while todo:  # Django builds them as CommandParsers, after add_arguments has added the subparsers
            p = todo.pop()
            p.__class__ = OneLineParser
            todo += [sub for a in p._actions if isinstance(a, argparse._SubParsersAction) for sub in a.choices.values()]
        return parser


def check_database(using):
    """Raise CommandError unless `using` is an alias in settings.DATABASES."""
    if using not in connections.databases:
        raise CommandError(f"--database {using}: no such database alias in settings.DATABASES "
                           f"(there: {', '.join(sorted(connections.databases))})")


class RetentionCommand(OneLineErrors, BaseCommand):
    """Base of the commands: --database, and RetentionError -> CommandError."""

    def add_arguments(self, parser):
        add_database_argument(parser)

    def execute(self, *args, **options):
        check_database(options.get("database", DEFAULT_DB_ALIAS))
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
        """Show progress on stderr: a bar on a terminal, else a line each time a new 10% step is crossed.

        `done` may jump (a running row count); a `done` lower than the last or
        another `total` starts a new series.
        """
        if total <= 0:
            return
        last_total, last_done, last_step = getattr(self, "_progress_at", (None, 0, 0))
        if total != last_total or done < last_done:
            last_step = 0
        step = done * 10 // total
        self._progress_at = (total, done, max(step, last_step))
        stream = sys.stderr
        if stream.isatty():
            width = 30
            filled = int(width * done / total)
            stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text[:40]:<40}")
            if done == total:
                stream.write("\n")
            stream.flush()
        elif done >= total or step > last_step:
            self.stderr.write(f"{done}/{total} {text}")
