"""exportobjects: export objects and their graph into a sealed bundle."""
import json
import os
import tempfile

from django.utils import timezone

from ... import audit
from ...bundle import KeyRing, seal
from ...graph.walk import walk
from ...pipeline import FORMAT, export_bundle, subject_text
from ...records import Export, schema
from ..base import RetentionCommand


class Command(RetentionCommand):
    help = (
        "Export objects, written <app_label>.<Model>.<pk>, with everything they own and every "
        "row those rows need (their references), into one sealed bundle: compressed, encrypted "
        "for the key ring's recipients and signed. Without --output the bundle goes to the "
        "retention storage and is recorded and audited; with --debug the records are printed "
        "as JSON Lines instead (nothing is written). This is the GDPR subject export."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("objects", nargs="+", metavar="OBJECT", help="e.g. demoapp.Organisation.42")
        parser.add_argument("-d", "--debug", action="store_true",
                            help="Print the records as JSON Lines instead of writing a bundle.")
        parser.add_argument("-o", "--output", metavar="PATH",
                            help="Write the bundle to PATH (and its signature to PATH.minisig) instead of the storage.")
        parser.add_argument("--plan", action="store_true",
                            help="Print rows per model and role without exporting anything.")
        parser.add_argument("--explain", action="append", default=[], metavar="OBJECT",
                            help="Print the path of relations from the subject that brings OBJECT "
                                 "(<app_label>.<Model>.<pk>) into the export, and its role; exports nothing. "
                                 "Repeat for several rows.")

    def handle(self, *args, **opts):
        explain = self.objects(opts["explain"])  # a malformed spec fails before any walk
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
        if opts["output"]:
            self.write_local(plan, opts["output"], keyring)
            return
        bundle = export_bundle(plan, keyring=keyring, action="subject-export")
        self.stdout.write(f"exported {sum(sum(c.values()) for c in bundle.counts.values())} records "
                          f"to bundle {bundle.id} ({bundle.storage}:{bundle.name}, {bundle.size} bytes)")

    def write_local(self, plan, path, keyring):
        label, pk = subject_text(plan)
        exp = Export(plan)
        metadata = {
            "format": FORMAT, "bundle_id": os.path.basename(path), "subject": f"{label}.{pk}",
            "subjects": [f"{lb}.{p}" for lb, p in plan.subjects], "policy": "", "policy_hash": "",
            "created_at": timezone.now().isoformat(),
            "schema": schema(set(plan.owned) | set(plan.references) | set(plan.updates)),
        }
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
            try:
                signature, counts = seal(tmp, metadata, exp.records(), keyring)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, path)
        with open(path + ".minisig", "wb") as fh:
            fh.write(signature)
        audit.append("subject-export", subject_label=label, subject_pk=pk, using=plan.using,
                     details={"records": sum(counts.values()), "owned": plan.total_owned})
        self.stdout.write(f"exported {sum(counts.values())} records to {path}")
