"""Errors of gestore_retention: one base and a few precise subclasses.

Every message names what is wrong and where: the model label, the field, the
file, the key. Commands turn a RetentionError into one line on stderr and a
non-zero exit; anything else is a bug and keeps its traceback.
"""
from django.db.models.deletion import ProtectedError


class RetentionError(Exception):
    """Base of every error gestore_retention raises on purpose."""


class ObjectSpecError(RetentionError):
    """An object written `<app_label>.<Model>.<pk>` is malformed or names nothing."""


class PolicyError(RetentionError):
    """A policy file or policy definition is invalid (names the file and the key)."""


class KeyError_(RetentionError):
    """A key is missing, unreadable or unusable."""


KeyringError = KeyError_


class BundleError(RetentionError):
    """A bundle cannot be trusted or read: signature, decryption, parsing, schema."""


class RestoreError(RetentionError):
    """A bundle cannot be applied to this database; nothing was written."""

    def __init__(self, message, *, conflicts=None):
        super().__init__(message)
        self.conflicts = conflicts or []


class EraseRefused(RetentionError):
    """Erasure was refused: the subject changed, is on hold, or is protected.

    `partial` is set when earlier batches of a batched erase committed (the
    subject is partly erased, every deleted row in the verified bundle, so
    that bundle must be kept); `erased` counts the rows this call deleted.
    """

    partial = False
    erased = 0


class SubjectHeld(EraseRefused):
    """A legal hold forbids the erasure (the subject, or a row the erasure would delete or change)."""


class ErasureBlocked(EraseRefused, ProtectedError):
    """PROTECT or RESTRICT relations (or a boundary) stop the erasure.

    A ProtectedError too, so code that handles Django's own error handles
    this one; `protected_objects` holds the blocking rows.
    """

    def __init__(self, message, protected_objects=()):
        self.protected_objects = protected_objects
        Exception.__init__(self, message)


class VerificationFailed(RetentionError):
    """The trial restore of a bundle did not reproduce the exported rows."""


class AuditChainBroken(RetentionError):
    """The audit log's hash chain does not verify."""
