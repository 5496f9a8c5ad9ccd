"""Bundle format: seal one subject's records into a signed age file, and open it.

Knows nothing of Django models. See docs/bundle-format.md for the format.
"""
from .format import FORMAT, Limits, OpenedBundle, seal
from .keyring import KeyRing, generate_keys
from .store import (
    SealedBundle,
    inspect_bundle,
    inspect_bundle_file,
    open_bundle_file,
    read_bundle,
    write_bundle,
)

__all__ = [
    "FORMAT",
    "KeyRing",
    "Limits",
    "OpenedBundle",
    "SealedBundle",
    "generate_keys",
    "inspect_bundle",
    "inspect_bundle_file",
    "open_bundle_file",
    "read_bundle",
    "seal",
    "write_bundle",
]
