"""importobjects: restore a bundle into the database, all or nothing."""
from ...recovery import restore_bundle
from ..base import RetentionCommand, nonempty


class Command(RetentionCommand):
    help = (
        "Restore a bundle made by exportobjects, deleteobjects or a retention run into the "
        "database. The signature is checked before anything is decrypted; the schema and every "
        "conflict with existing rows are checked before anything is written; rows are inserted in "
        "dependency order in one transaction, so a bad bundle or a conflict changes nothing. "
        "PATH is a bundle file (its signature at PATH.minisig) or a bundle id."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("path", metavar="PATH", type=nonempty, help="Bundle file or bundle id.")
        parser.add_argument("-d", "--debug", action="store_true",
                            help="Dry run: perform the real restore, report it, then roll it back.")
        parser.add_argument("-o", "--override", action="store_true",
                            help="Overwrite rows that already exist with the bundle's values "
                                 "(default: refuse and change nothing).")
        add_safety_arguments(parser)

    def handle(self, *args, **opts):
        mode = "override" if opts["override"] else "fail"
        result, metadata = restore_bundle(
            opts["path"], using=opts["database"], dry_run=opts["debug"], mode=mode,
            allow_erased=opts["allow_erased"], allow_additive=opts["allow_schema_additions"],
            progress=self.restore_progress,
        )
        write_result(self, result, metadata, dry_run=opts["debug"])

    def restore_progress(self, done, total):
        if total and total >= PROGRESS_FROM:
            self.progress(done, total, "records")


PROGRESS_FROM = 10_000  # records: below this a restore takes a second or two, no bar


def add_safety_arguments(parser):
    """The options importobjects and `retention restore` share."""
    parser.add_argument("--allow-erased", action="store_true",
                        help="Restore even though the audit log shows the subject was erased after the "
                             "bundle was made (default: refuse).")
    parser.add_argument("--allow-schema-additions", action="store_true",
                        help="Proceed when the only schema drift is fields added since the bundle was made "
                             "(nullable or with a default); any other drift is always refused.")


def write_result(command, result, metadata, *, dry_run):
    """Write the per-model summary table and one closing line."""
    columns = [
        ("restored", result.inserted), ("overridden", result.overridden), ("skipped", result.skipped),
        ("new keys", result.remapped), ("references created", result.references_created),
        ("references matched", result.references_matched), ("columns put back", result.updates_applied),
    ]
    columns = [(name, counts) for name, counts in columns if counts or name in ("restored", "references created")]
    labels = sorted(set().union(*(c for _, c in columns)))
    command.table([[lb] + [counts.get(lb, "") for _, counts in columns] for lb in labels],
                  ["model"] + [name for name, _ in columns])
    for label, n in sorted(result.receiver_rows_removed.items()):
        command.stdout.write(f"{label}: {n} row(s) created by signal receivers replaced by the bundle's")
    verb = "would restore" if dry_run else "restored"
    command.stdout.write(
        f"{verb} {metadata.get('subject', '?')} from bundle {metadata.get('bundle_id', '?')}: "
        f"{result.total} rows (mode {result.mode})" + (" (dry run: rolled back)" if dry_run else "")
    )
