"""retention: run policies, manage keys, restore bundles, check the audit log."""
import argparse
import json

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS

from ... import audit, conf, sweep
from ...bundle import KeyRing, destroy_epoch, generate_keys, next_epoch, revoke_signing_key
from ...models import Bundle, Job, Run
from ...recovery import restore_bundle
from ...restore import MODES
from ...policy import get_policy, load_policies
from ..base import RetentionCommand, add_database_argument, nonempty, positive, refuse_combined
from .importobjects import PROGRESS_FROM, add_safety_arguments, write_result

SUBCOMMANDS = {
    "run": "Run a policy (or all): select subjects, export, verify, erase. In-process, no broker.",
    "keygen": "Generate the key set (age identity, signing key) into KEYS_DIR.",
    "restore": "Restore a bundle (file path or bundle id) into the database.",
    "status": "Show recent runs, open jobs and stored bundles.",
    "audit-verify": "Verify the audit log's hash chain (keep the head it prints outside the database and "
                    "pass it back with --known-head to detect deleted newest events).",
    "policies": "Load and validate every policy file; list them.",
    "sync-schedules": "Create or update django-celery-beat periodic tasks from the policies.",
}


class Command(RetentionCommand):
    help = (
        "Retention sweeps and their tools: run a policy in-process (no broker needed), generate "
        "keys, restore a bundle, show status, verify the audit chain, validate policies and sync "
        "their schedules into django-celery-beat. `manage.py retention SUBCOMMAND --help` shows "
        "the options of each subcommand."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        def add(name):
            subparser = sub.add_parser(name, help=SUBCOMMANDS[name], description=SUBCOMMANDS[name])
            # --database after the subcommand too (`retention run --database x`).
            add_database_argument(subparser, default=argparse.SUPPRESS)
            return subparser

        run = add("run")
        run.add_argument("policy", nargs="?", help="Policy name or path to a .toml file (default: every policy).")
        run.add_argument("--dry-run", action="store_true", help="Print the plan (subjects, rows per model); write nothing.")
        keygen = add("keygen")
        keygen.add_argument("--dir", help="Directory for the key files (default: the KEYS_DIR setting).")
        keygen.add_argument("--epoch", type=positive, default=None, metavar="N",
                            help="Epoch number (1 or more) of the new encryption key (default: one more than "
                                 "the newest).")
        keygen.add_argument("--escrow", metavar="RECIPIENT",
                            help="An age1... escrow recipient added to every new bundle (kept across rotations).")
        keygen.add_argument("--revoke", metavar="KEY_ID",
                            help="Revoke a signing key instead: it then verifies and signs nothing.")
        keygen.add_argument("--reason", default="", help="With --revoke: why, recorded in keyring.json.")
        keygen.add_argument("--destroy-epoch", type=positive, metavar="N",
                            help="Destroy the age identity of epoch N instead (crypto-shredding: bundles "
                                 "encrypted only for it become unreadable; rewrap the ones to keep first).")
        restore = add("restore")
        restore.add_argument("bundle", metavar="BUNDLE", type=nonempty, help="Bundle file path or bundle id.")
        restore.add_argument("--dry-run", action="store_true", help="Restore, report, then roll back.")
        restore.add_argument("--mode", choices=MODES, default="fail",
                             help="What to do when owned rows exist: fail (default: report every conflict, "
                                  "change nothing), skip-identical (leave identical rows alone), override "
                                  "(overwrite them), remap (restore under new keys, rewriting every "
                                  "reference). A unique value taken by another row fails in every mode.")
        add_safety_arguments(restore)
        add("status")
        audit_verify = add("audit-verify")
        audit_verify.add_argument(
            "--known-head", metavar="HASH", type=nonempty,
            help="A head hash printed by an earlier audit-verify and kept outside the database (16+ hex "
                 "digits): the chain must still contain it, so deleting the newest events is detected too.")
        add("policies")
        sync = add("sync-schedules")
        sync.add_argument("--dry-run", action="store_true", help="Show the changes; write nothing.")

    def handle(self, *args, **opts):
        getattr(self, "do_" + opts["subcommand"].replace("-", "_"))(opts)

    # -- subcommands -------------------------------------------------------
    def do_run(self, opts):
        using = opts["database"]
        policies = [get_policy(opts["policy"])] if opts["policy"] else list(load_policies().values())
        if not policies:
            raise CommandError("no policies found in POLICY_DIRS")
        if not opts["dry_run"] and any(p.action != "report" for p in policies):
            KeyRing.from_settings()  # a missing or bad key fails here, before any run is recorded
        failed = 0
        for policy in policies:
            self.stdout.write(f"policy {policy.name} ({policy.action}) sha256:{policy.text_hash[:12]}")
            subjects, totals = sweep.dry_run(policy, using=using)
            self.stdout.write(f"  {len(subjects)} subject(s) selected: "
                              + ", ".join(f"{policy.subject}.{pk}" for pk, _ in subjects[:20])
                              + (" ..." if len(subjects) > 20 else "") if subjects else "  0 subjects selected")
            if subjects:
                self.plan_table(totals)
            if opts["dry_run"]:
                self.stdout.write("dry run: nothing written")
                continue
            summary = sweep.run_policy(
                policy, using=using,
                progress=lambda i, n, job: self.progress(i, n, f"{job.subject_label}.{job.subject_pk} {job.stage}"),
            )
            stages = ", ".join(f"{k}={v}" for k, v in sorted(summary.stages.items()))
            self.stdout.write(
                f"run {summary.run_id}: {summary.selected} selected; "
                + (f"jobs by stage: {stages}" if stages else "no jobs")
                + f"; {summary.erased_rows} rows erased; {len(summary.bundles)} bundle(s)"
            )
            for name in summary.bundles:
                self.stdout.write(f"  bundle {policy.storage}:{name}")
            for error in summary.errors:
                self.stderr.write(f"  {error}")
            failed += summary.stages.get(Job.FAILED, 0) + summary.stages.get(Job.RETRY, 0)
        if failed:
            raise CommandError(f"{failed} job(s) failed (errors above); retryable ones resume on the next run, "
                               "permanent ones need a person (retention status)")

    def do_keygen(self, opts):
        directory = opts["dir"] or conf.get("KEYS_DIR")
        if not directory:
            raise CommandError('no key directory: pass --dir or set GESTORE_RETENTION["KEYS_DIR"]')
        # Three actions: generate (--epoch, --escrow), --revoke (with --reason), --destroy-epoch.
        refuse_combined(opts, "--revoke", "--destroy-epoch", "--epoch")
        refuse_combined(opts, "--revoke", "--destroy-epoch", "--escrow")
        if opts["reason"] and not opts["revoke"]:
            raise CommandError("--reason goes with --revoke (why the signing key is revoked)")
        # A KeyringError becomes a one-line CommandError in RetentionCommand.execute.
        if opts["revoke"]:
            info = revoke_signing_key(directory, opts["revoke"], reason=opts["reason"])
            self.stdout.write(f"signing key {opts['revoke'].upper()} revoked in {directory} at "
                              f"{info['revoked_at']}: it verifies no bundle from now on")
            return
        if opts["destroy_epoch"] is not None:
            recipient = destroy_epoch(directory, opts["destroy_epoch"])
            self.stdout.write(f"epoch {opts['destroy_epoch']} identity ({recipient}) destroyed in {directory}: "
                              "bundles encrypted only for it can no longer be decrypted")
            return
        epoch = opts["epoch"] if opts["epoch"] is not None else next_epoch(directory)
        public = generate_keys(directory, epoch=epoch, escrow_recipient=opts["escrow"])
        self.stdout.write(f"keys written to {directory} (private files are mode 0400; keep them secret)")
        for key, value in public.items():
            self.stdout.write(f"  {key}: {value}")

    def do_restore(self, opts):
        result, metadata = restore_bundle(
            opts["bundle"], using=opts["database"], dry_run=opts["dry_run"], mode=opts["mode"],
            allow_erased=opts["allow_erased"], allow_additive=opts["allow_schema_additions"],
            progress=lambda done, total: total and total >= PROGRESS_FROM and self.progress(done, total, "records"),
        )
        write_result(self, result, metadata, dry_run=opts["dry_run"])

    def do_status(self, opts):
        using = opts["database"]
        runs = Run.objects.using(using).order_by("-pk")[:10]
        self.stdout.write("recent runs:")
        self.table([[r.pk, r.policy, r.started_at.strftime("%Y-%m-%d %H:%M:%S"), json.dumps(r.counts.get("jobs", {}))]
                    for r in runs], ["run", "policy", "started", "jobs"])
        open_jobs = Job.objects.using(using).filter(active_key__isnull=False).count()
        self.stdout.write(f"open jobs: {open_jobs}")
        bundles = Bundle.objects.using(using).order_by("-created_at")[:20]
        self.stdout.write("bundles:")
        self.table([[b.id, f"{b.subject_label}.{b.subject_pk}", b.storage + ":" + b.name, b.size,
                     "yes" if b.verified_at else "no"] for b in bundles],
                   ["bundle", "subject", "location", "bytes", "verified"])

    def do_audit_verify(self, opts):
        if opts["known_head"] and (problem := audit.known_head_error(opts["known_head"])):
            raise CommandError(f"--known-head {opts['known_head']!r}: {problem}")  # the input, not the chain
        report = audit.verify_chain(using=opts["database"], known_head=opts["known_head"] or "")
        if not report.ok:
            raise CommandError(str(report))
        self.stdout.write(str(report))

    def do_policies(self, opts):
        policies = load_policies()
        self.table([[p.name, p.subject, p.action, p.schedule, p.source] for p in policies.values()],
                   ["policy", "subject", "action", "schedule", "file"])

    def do_sync_schedules(self, opts):
        from ...schedule import sync_schedules

        if opts["database"] != DEFAULT_DB_ALIAS:
            raise CommandError(f"--database {opts['database']}: sync-schedules writes the periodic tasks "
                               "where django-celery-beat reads them, the default database")

        result = sync_schedules(dry_run=opts["dry_run"])
        self.stdout.write(str(result))


