"""Django admin: a read-only view of runs, jobs, bundles and the audit log; holds are editable."""
from django.contrib import admin

from .models import AuditEvent, Bundle, Job, LegalHold, Run


class ReadOnlyAdmin(admin.ModelAdmin):
    """The audit trail is written by the pipeline only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "policy", "action", "dry_run", "started_at", "finished_at")
    list_filter = ("policy", "action")


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("id", "policy", "subject_label", "subject_pk", "stage", "attempts", "updated_at")
    list_filter = ("stage", "policy")
    search_fields = ("subject_pk",)


@admin.register(Bundle)
class BundleAdmin(ReadOnlyAdmin):
    list_display = ("id", "subject_label", "subject_pk", "policy", "created_at", "verified_at", "expires_at", "size")
    list_filter = ("policy",)
    search_fields = ("id", "subject_pk")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("seq", "created_at", "action", "outcome", "subject_label", "subject_pk", "bundle_id")
    list_filter = ("action", "outcome")
    search_fields = ("subject_pk", "bundle_id")


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    """Holds are placed and released through gestore_retention.holds, which audits them."""

    list_display = ("subject_label", "subject_pk", "reason", "placed_at", "released_at")
    list_filter = ("subject_label",)
    readonly_fields = ("subject_label", "subject_pk", "reason", "placed_at", "released_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
