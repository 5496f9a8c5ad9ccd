"""exportobjects: export objects and their graph into a sealed bundle."""
import json
import os
import tempfile

from ... import audit, conf
from ...bundle import KeyRing, seal
from ...errors import RetentionError
from ...graph.walk import walk
from ...pipeline import bundle_metadata, export_bundle, subject_text
from ...records import Export
from ..base import RetentionCommand, nonempty, refuse_combined


class Command(RetentionCommand):
    help = (
        "Export objects, written <app_label>.<Model>.<pk>, with everything they own and every "
        "row those rows need (their references), into one sealed bundle: compressed, encrypted "
        "for the key ring's recipients and signed. Without --output the bundle goes to the "
        "retention storage and is recorded and audited; with --debug the records are printed "
        "as JSON Lines instead (nothing is written). --output, --debug, --plan and --explain exclude "
        "one another. This is the GDPR subject export."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("objects", nargs="+", metavar="OBJECT", help="e.g. demoapp.Organisation.42")
        parser.add_argument("-d", "--debug", action="store_true",
                            help="Print the records as JSON Lines instead of writing a bundle.")
        parser.add_argument("-o", "--output", metavar="PATH", type=nonempty,
                            help="Write the bundle to PATH (and its signature to PATH.minisig) instead of the storage.")
        parser.add_argument("--plan", action="store_true",
                            help="Print rows per model and role without exporting anything.")
        parser.add_argument("--explain", action="append", default=[], metavar="OBJECT",
                            help="Print the path of relations from the subject that brings OBJECT "
                                 "(<app_label>.<Model>.<pk>) into the export, and its role; exports nothing. "
                                 "Repeat for several rows.")

    def handle(self, *args, **opts):
        refuse_combined(opts, "--output", "--debug", "--plan", "--explain")
        explain = self.objects(opts["explain"])  # a malformed spec fails before any walk
        if opts["output"] is not None:
            check_output(opts["output"])  # before the walk: a bad path costs nothing
        plan = walk(self.objects(opts["objects"]), using=opts["database"])
        if explain:
            for model, pk in explain:
                why = plan.explain(model, pk)
                self.stdout.write(f"{why.model} {why.pk!r}: {why.role}")
                for step in why.steps:
                    self.stdout.write(f"  {step}")
            return
        if opts["plan"]:
            self.plan_table(plan.counts())
            for blocker in plan.blockers:
                self.stdout.write(f"blocker: {blocker}")
            return
        if opts["debug"]:
            for record in Export(plan).records():
                self.stdout.write(json.dumps(record, ensure_ascii=False))
            return
        keyring = KeyRing.from_settings()
        if opts["output"] is not None:
            self.write_local(plan, opts["output"], keyring)
            return
        bundle = export_bundle(plan, keyring=keyring, action="subject-export")
        self.stdout.write(f"exported {sum(sum(c.values()) for c in bundle.counts.values())} records "
                          f"to bundle {bundle.id} ({bundle.storage}:{bundle.name}, {bundle.size} bytes)")

    def write_local(self, plan, path, keyring):
        label, pk = subject_text(plan)
        exp = Export(plan)
        metadata = bundle_metadata(plan, bundle_id=os.path.basename(path))
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".exportobjects-", delete=False) as tmp:
            try:
                signature, counts = seal(tmp, metadata, exp.records(), keyring)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        written = []
        try:
            # Signature first, then the bundle: a bundle is never seen without it.
            fd = os.open(path + ".minisig", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            written.append(path + ".minisig")
            with os.fdopen(fd, "wb") as fh:
                fh.write(signature)
            os.replace(tmp.name, path)
        except BaseException:
            for name in [tmp.name, *written]:
                if os.path.exists(name):
                    os.unlink(name)
            raise
        audit.append("subject-export", subject_label=label, subject_pk=pk, using=plan.using,
                     details={"records": sum(counts.values()), "owned": plan.total_owned})
        self.stdout.write(f"exported {sum(counts.values())} records to {path}")


def check_output(path):
    """Raise RetentionError unless PATH is a new file in an existing directory outside the retention storage."""
    from django.core.files.storage import storages

    target = os.path.abspath(path)
    for name in (path, path + ".minisig"):
        if os.path.lexists(name):
            kind = "a directory" if os.path.isdir(name) else "a file"
            raise RetentionError(f"--output {name}: {kind} exists there; a bundle is never overwritten, "
                                 "choose a new path")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise RetentionError(f"--output {path}: directory {directory} does not exist")
    location = getattr(storages[conf.get("STORAGE")], "location", None)
    if location and os.path.commonpath([target, os.path.abspath(location)]) == os.path.abspath(location):
        raise RetentionError(f"--output {path}: that is inside the retention storage ({location}); "
                             "leave out --output to store a recorded bundle there")
