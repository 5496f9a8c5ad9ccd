"""Bundle format: seal one subject's records into a signed age file, and open it.

Knows nothing of Django models. See docs/bundle-format.md for the format.
"""
from .format import FORMAT, Limits, OpenedBundle, seal
from .keyring import KeyRing, destroy_epoch, generate_keys, next_epoch, revoke_signing_key
from .store import (
    SealedBundle,
    inspect_bundle,
    inspect_bundle_file,
    open_bundle_file,
    read_bundle,
    rewrap_bundle_file,
    write_bundle,
)

__all__ = [
    "FORMAT",
    "KeyRing",
    "Limits",
    "OpenedBundle",
    "SealedBundle",
    "destroy_epoch",
    "generate_keys",
    "inspect_bundle",
    "inspect_bundle_file",
    "next_epoch",
    "open_bundle_file",
    "read_bundle",
    "revoke_signing_key",
    "rewrap_bundle_file",
    "seal",
    "write_bundle",
]
