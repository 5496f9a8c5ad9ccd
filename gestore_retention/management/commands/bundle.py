"""bundle: inspect, verify or rewrap a sealed bundle file (no database access)."""
import json

from django.core.management.base import BaseCommand, CommandError

from ...bundle import KeyRing, inspect_bundle_file, open_bundle_file, rewrap_bundle_file
from ...errors import RetentionError
from ..base import OneLineErrors, nonempty

SUBCOMMANDS = {
    "inspect": "Show a bundle's header and signature facts without decrypting it. This is a read-only operation.",
    "verify": ("Check a bundle completely: signature by a trusted key, decryption of every chunk, every "
               "record, and the manifest (counts, SHA-256). This is a read-only operation."),
    "rewrap": ("Re-wrap the bundle's file key for the key ring's current recipients (primary epoch and "
               "escrow) and re-sign it with the current signing key, without re-encrypting the payload. "
               "Run it on old bundles before destroying an old epoch key or revoking an old signing key. "
               "The old signature must verify first; the result is verified completely before it replaces "
               "PATH and PATH.minisig."),
}


class Command(OneLineErrors, BaseCommand):
    help = (
        "Inspect, verify or rewrap a sealed bundle file (PATH, with its signature at PATH.minisig). "
        "Keys come from GESTORE_RETENTION['KEYS_DIR'] (or env GESTORE_RETENTION_KEYS_DIR). "
        + " ".join(f"{name}: {text}" for name, text in SUBCOMMANDS.items())
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
        for name, text in SUBCOMMANDS.items():
            action = sub.add_parser(name, help=text, description=text)
            action.add_argument("path", metavar="PATH", type=nonempty, help="Bundle file (.age); its signature is PATH.minisig.")
            action.add_argument("--signature", metavar="SIG",
                                help="Signature file, when it is not PATH.minisig.")
            action.add_argument("--json", action="store_true", help="Print the result as one JSON object.")

    def handle(self, *args, **opts):
        try:
            result = getattr(self, "do_" + opts["subcommand"])(opts)
        except RetentionError as exc:
            raise CommandError(str(exc)) from None
        if opts["json"]:
            self.stdout.write(json.dumps(result, sort_keys=True, ensure_ascii=False))
        else:
            for key, value in result.items():
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, sort_keys=True, ensure_ascii=False)
                self.stdout.write(f"{key}: {value}")
        if result.get("signature_verified") is False:  # the facts are shown, but they cannot be trusted
            # The error names the bundle already ("bundle PATH: ...").
            error = result.get("signature_error") or f"bundle {opts['path']}: the signature does not verify"
            raise CommandError(f"{error}; the metadata shown is unauthenticated")

    def do_inspect(self, opts):
        try:
            keyring = KeyRing.from_settings()
        except RetentionError:
            keyring = None  # still show the facts; the signature stays unchecked
        facts = inspect_bundle_file(opts["path"], opts["signature"], keyring=keyring)
        if keyring is None:
            facts["signature_verified"] = "not checked (no key ring)"
        return facts

    def do_verify(self, opts):
        keyring = KeyRing.from_settings()
        with open_bundle_file(opts["path"], opts["signature"], keyring) as bundle:
            for _ in bundle.records():
                pass
            return {
                "bundle": bundle.label,
                "status": "OK",
                "signer_key_id": bundle.signer_key_id,
                "metadata": bundle.metadata,
                "decrypted_with_epoch": bundle.epoch,
                "signed_at": bundle.signed_at.isoformat() if bundle.signed_at else None,
                "records": bundle.manifest["records"],
                "counts": bundle.manifest["counts"],
                "sha256": bundle.manifest["sha256"],
            }

    def do_rewrap(self, opts):
        return rewrap_bundle_file(opts["path"], opts["signature"], KeyRing.from_settings())
