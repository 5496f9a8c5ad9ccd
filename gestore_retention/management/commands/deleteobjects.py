"""deleteobjects: archive, verify, then erase objects and what they own."""
import itertools

from django.core.management.base import CommandError

from ...errors import EraseRefused
from ...graph.walk import walk
from ...pipeline import archive_and_erase, refuse_erasure
from ..base import RetentionCommand, positive


class Command(RetentionCommand):
    help = (
        "Erase objects, written <app_label>.<Model>.<pk>, and every row Django would cascade-"
        "delete with them. Nothing is deleted that is not first exported into a stored bundle "
        "whose trial restore reproduced every row; the deletion then runs under a lock and is "
        "refused if anything changed meanwhile. --dry-run shows what would go (a tree of the models "
        "reached and the relation that reaches each, rows per model and role, and any PROTECT/"
        "RESTRICT blockers with their model, field and keys) and writes nothing."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("objects", nargs="+", metavar="OBJECT", help="e.g. demoapp.Organisation.42")
        parser.add_argument("--dry-run", action="store_true",
                            help="Show what would be deleted, changed and exported; write nothing.")
        parser.add_argument("--batch-rows", type=positive, metavar="N", default=None,
                            help="Erase a subject with more owned rows than N in batches of about N rows "
                                 "(whole chunks of the export's BATCH_SIZE keys), one transaction each, every "
                                 "batch checked against the bundle, with progress on stderr "
                                 '(default: GESTORE_RETENTION["ERASE_BATCH_ROWS"], 200000).')

    def handle(self, *args, **opts):
        objects = self.objects(opts["objects"])
        using = opts["database"]
        # Every object is walked before any is erased: a missing or blocked
        # one fails the command while nothing has been written.
        plans = [walk([(model, pk)], using=using) for model, pk in objects]
        if opts["dry_run"]:
            return self.preview(objects, plans)
        for plan in plans:
            refuse_erasure(plan)
        for (model, pk), plan in zip(objects, plans):
            spec = f"{model._meta.label}.{pk}"
            batch = itertools.count(1)
            progress = (lambda done, total, label: self.progress(done, total, f"batch {next(batch)}: {label}")
                        if opts["verbosity"] else None)
            bundle, result = archive_and_erase((model, pk), using=using, batch_rows=opts["batch_rows"],
                                               on_batch=progress)
            self.stdout.write(
                f"{spec}: deleted {result.total} rows; bundle {bundle.id} ({bundle.storage}:{bundle.name})"
            )
            self.table(sorted(result.deleted.items()), ["model", "deleted"])

    def preview(self, objects, plans):
        """Print what each object's erasure would delete; fail (exit 1) if any would be refused."""
        refused = []
        for (model, pk), plan in zip(objects, plans):
            spec = f"{model._meta.label}.{pk}"
            self.stdout.write(f"{spec}: would delete {plan.total_owned} rows")
            for depth, label, via, n in plan.tree():
                self.stdout.write(f"{'  ' * depth}{label}: {n}" + (f"  (via {via})" if via else ""))
            self.plan_table(plan.counts())
            for blocker in plan.blockers:
                self.stdout.write(f"blocker: {blocker}")
            try:
                refuse_erasure(plan)
            except EraseRefused as exc:
                refused.append(f"{spec}: {exc}")
        if refused:
            raise CommandError("dry run: the erasure would be refused: " + " | ".join(refused))

