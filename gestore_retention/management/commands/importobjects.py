"""importobjects: restore a bundle into the database, all or nothing."""
from ...recovery import restore_bundle
from ..base import RetentionCommand


class Command(RetentionCommand):
    help = (
        "Restore a bundle made by exportobjects, deleteobjects or a retention run into the "
        "database. The signature is checked before anything is decrypted; rows are inserted in "
        "dependency order in one transaction, so a bad bundle or a conflict changes nothing. "
        "PATH is a bundle file (its signature at PATH.minisig) or a bundle id."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("path", metavar="PATH", help="Bundle file or bundle id.")
        parser.add_argument("-d", "--debug", action="store_true",
                            help="Dry run: perform the real restore, report it, then roll it back.")
        parser.add_argument("-o", "--override", action="store_true",
                            help="Overwrite rows that already exist with the bundle's values "
                                 "(default: refuse and change nothing).")

    def handle(self, *args, **opts):
        mode = "override" if opts["override"] else "fail"
        result, metadata = restore_bundle(opts["path"], using=opts["database"], dry_run=opts["debug"], mode=mode)
        self.write_result(result, metadata, dry_run=opts["debug"])

    def write_result(self, result, metadata, *, dry_run):
        labels = sorted(set(result.inserted) | set(result.references_created) | set(result.updates_applied)
                        | set(result.overridden))
        self.table(
            [[lb, result.inserted.get(lb, ""), result.overridden.get(lb, ""), result.references_created.get(lb, ""),
              result.updates_applied.get(lb, "")] for lb in labels],
            ["model", "restored", "overridden", "references created", "columns put back"],
        )
        verb = "would restore" if dry_run else "restored"
        self.stdout.write(f"{verb} {metadata.get('subject', '?')} from bundle {metadata.get('bundle_id', '?')}: "
                          f"{result.total} rows" + (" (dry run: rolled back)" if dry_run else ""))
