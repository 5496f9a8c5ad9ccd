"""Database state of gestore_retention: runs, jobs, bundles, holds, audit events."""
from django.db import models


class LegalHold(models.Model):
    """A mark that forbids erasing a subject (GDPR Art. 17(3))."""

    subject_label = models.CharField(max_length=200, help_text="Model label, e.g. demoapp.Organisation.")
    subject_pk = models.CharField(max_length=200, help_text="Primary key of the subject, as text.")
    reason = models.CharField(max_length=200, help_text="Why the subject is held (a case number, not personal data).")
    placed_at = models.DateTimeField(help_text="When the hold was placed.")
    released_at = models.DateTimeField(null=True, blank=True, help_text="When the hold was lifted; empty while active.")

    class Meta:
        indexes = [models.Index(fields=["subject_label", "subject_pk"])]

    def __str__(self):
        return f"hold {self.subject_label}.{self.subject_pk}"


class Run(models.Model):
    """One execution of a policy."""

    policy = models.CharField(max_length=100, help_text="Name of the policy.")
    policy_hash = models.CharField(max_length=64, help_text="SHA-256 of the policy text the run used.")
    action = models.CharField(max_length=30, help_text="What the run does to each subject.")
    dry_run = models.BooleanField(default=False, help_text="A dry run plans and writes nothing.")
    started_at = models.DateTimeField(help_text="When the run started.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the last job finished.")
    counts = models.JSONField(default=dict, blank=True, help_text="Jobs per final stage.")

    def __str__(self):
        return f"run {self.pk} of {self.policy}"


class Bundle(models.Model):
    """A sealed, stored bundle of one subject."""

    id = models.CharField(max_length=40, primary_key=True, help_text="Bundle id, also its file name.")
    storage = models.CharField(max_length=60, help_text="STORAGES alias the bundle lives in.")
    name = models.CharField(max_length=300, help_text="File name inside the storage.")
    subject_label = models.CharField(max_length=200, help_text="Model label of the subject.")
    subject_pk = models.CharField(max_length=200, help_text="Primary key of the subject, as text.")
    policy = models.CharField(max_length=100, blank=True, help_text="Policy that made it, if any.")
    policy_hash = models.CharField(max_length=64, blank=True, help_text="Hash of that policy's text.")
    created_at = models.DateTimeField(help_text="When the bundle was sealed.")
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the stored file.")
    size = models.BigIntegerField(help_text="Size of the stored file in bytes.")
    owned_digest = models.CharField(max_length=64, help_text="Digest of the owned rows; the erase guard compares it.")
    counts = models.JSONField(default=dict, help_text="Records per model and role.")
    chunks = models.JSONField(default=dict, blank=True, help_text=(
        "Owned records hashed per chunk of sorted keys ({size, owned: {label: [[first, last, n, sha256]]}}); "
        "a batched erase checks one chunk at a time. Empty for bundles made before it existed."))
    verified_at = models.DateTimeField(null=True, blank=True, help_text="When a trial restore proved the bundle.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When the bundle may be destroyed.")

    def __str__(self):
        return self.id


class Job(models.Model):
    """The work for one subject inside a run: a small state machine."""

    PENDING, EXPORTED, VERIFIED, ERASED, CLOSED = "pending", "exported", "verified", "erased", "closed"
    HELD, RETRY, FAILED, SKIPPED = "held", "failed-retryable", "failed-permanent", "skipped"
    STAGES = [PENDING, EXPORTED, VERIFIED, ERASED, CLOSED, HELD, RETRY, FAILED, SKIPPED]

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="jobs", help_text="The run that made the job.")
    policy = models.CharField(max_length=100, help_text="Name of the policy.")
    subject_label = models.CharField(max_length=200, help_text="Model label of the subject.")
    subject_pk = models.CharField(max_length=200, help_text="Primary key of the subject, as text.")
    stage = models.CharField(max_length=20, choices=[(s, s) for s in STAGES], default=PENDING, help_text="Last stage reached.")
    # Unique while the job is open, NULL once it is finished: at most one open
    # job per (policy, subject), on every backend (no partial indexes needed).
    active_key = models.CharField(max_length=255, null=True, blank=True, unique=True, help_text="policy|label|pk while open.")
    bundle = models.ForeignKey(Bundle, null=True, blank=True, on_delete=models.SET_NULL, help_text="The job's bundle, once stored.")
    lease_owner = models.CharField(max_length=64, blank=True, help_text="Worker token holding the job.")
    lease_until = models.DateTimeField(null=True, blank=True, help_text="When the lease ends.")
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a worker claimed it.")
    exports = models.PositiveIntegerField(default=0, help_text="Stale bundles dropped so far; names the next bundle.")
    retry_stage = models.CharField(max_length=20, blank=True, help_text="Stage to resume from after a retryable failure.")
    last_error = models.TextField(blank=True, help_text="The last error, if any.")
    updated_at = models.DateTimeField(help_text="Last transition.")

    def __str__(self):
        return f"job {self.pk} {self.subject_label}.{self.subject_pk} [{self.stage}]"


class AuditEvent(models.Model):
    """An append-only, hash-chained record of one action.

    Holds no personal data: a model label, a primary key, ids and counts.
    """

    seq = models.PositiveBigIntegerField(unique=True, help_text="Position in the chain, from 1.")
    created_at = models.DateTimeField(help_text="When the action happened.")
    action = models.CharField(max_length=40, help_text="export, verify, erase, restore, subject-export, hold, ...")
    outcome = models.CharField(max_length=20, default="ok", help_text="ok, refused, failed.")
    subject_label = models.CharField(max_length=200, blank=True, help_text="Model label of the subject.")
    subject_pk = models.CharField(max_length=200, blank=True, help_text="Primary key of the subject, as text.")
    policy = models.CharField(max_length=100, blank=True, help_text="Policy name, if any.")
    policy_hash = models.CharField(max_length=64, blank=True, help_text="Hash of the policy text.")
    bundle_id = models.CharField(max_length=40, blank=True, help_text="Bundle concerned, if any.")
    details = models.JSONField(default=dict, blank=True, help_text="Counts and ids; never personal data.")
    prev_hash = models.CharField(max_length=64, unique=True, help_text="Hash of the previous event (zeros for the first).")
    hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 over prev_hash and this event.")

    class Meta:
        ordering = ["seq"]

    def __str__(self):
        return f"#{self.seq} {self.action} {self.subject_label}.{self.subject_pk}"
