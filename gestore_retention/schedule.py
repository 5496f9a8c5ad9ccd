"""Schedule sync: one django-celery-beat PeriodicTask per policy, kept in step with the files.

Each policy gets a PeriodicTask named `gestore-retention:<policy name>` that
calls the task `gestore_retention.tasks.run_policy` with the policy name as
its only argument, on a CrontabSchedule built from the policy's cron in UTC.
A task whose policy is gone is disabled, not deleted, so its history stays.
The sync is idempotent: running it twice changes nothing the second time.
"""
import dataclasses
import json

from django.db import transaction

PREFIX = "gestore-retention:"
TASK = "gestore_retention.tasks.run_policy"
TIMEZONE = "UTC"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What `sync_schedules()` did (or would do, on a dry run): policy names per outcome."""

    created: tuple = ()
    updated: tuple = ()
    unchanged: tuple = ()
    removed: tuple = ()      # tasks disabled because their policy no longer exists
    dry_run: bool = False

    @property
    def changed(self):
        """True if the sync wrote (or would write) anything."""
        return bool(self.created or self.updated or self.removed)

    def __str__(self):
        parts = [f"{len(getattr(self, k))} {k}" for k in ("created", "updated", "unchanged", "removed")]
        return ("dry run: " if self.dry_run else "") + ", ".join(parts)


def task_name(policy_name):
    """The PeriodicTask name of a policy."""
    return f"{PREFIX}{policy_name}"


def _crontab(cron):
    """Return a CrontabSchedule for these cron fields in UTC, reusing an identical one."""
    from django_celery_beat.models import CrontabSchedule

    # CrontabSchedule has no unique constraint: several identical rows may
    # exist (made in the admin); take the oldest rather than fail.
    existing = CrontabSchedule.objects.filter(timezone=TIMEZONE, **cron).order_by("pk").first()
    return existing or CrontabSchedule.objects.create(timezone=TIMEZONE, **cron)


def _same_crontab(crontab, cron):
    return crontab is not None and str(crontab.timezone) == TIMEZONE and all(
        getattr(crontab, name) == cron[name] for name in CRON_FIELDS)


def _wanted(policy):
    return {
        "task": TASK,
        "args": json.dumps([policy.name]),
        "kwargs": "{}",
        "enabled": True,
        "one_off": False,
        "description": policy.description,
    }


def _policies(policies):
    if policies is None:
        from gestore_retention.policy import load_policies

        return list(load_policies().values())
    if isinstance(policies, dict):
        return list(policies.values())
    return list(policies)


def sync_schedules(policies=None, *, dry_run=False):
    """Make the `gestore-retention:*` periodic tasks match `policies`; return a SyncResult.

    `policies` is a {name: Policy} dict or an iterable of Policy (default: every
    policy in POLICY_DIRS). Create a task per new policy, update tasks whose
    schedule, arguments, description or state differ (a disabled task of an
    existing policy is enabled again), and disable tasks whose policy is
    gone. A dry run does the same work inside a transaction it rolls back.
    """
    from django_celery_beat.models import PeriodicTask

    policies = _policies(policies)
    created, updated, unchanged, removed = [], [], [], []
    with transaction.atomic():
        # Lock our rows so two concurrent syncs do not interleave updates.
        tasks = {t.name: t for t in PeriodicTask.objects.filter(name__startswith=PREFIX).select_for_update()}
        for policy in sorted(policies, key=lambda p: p.name):
            cron, wanted = policy.cron, _wanted(policy)
            task = tasks.get(task_name(policy.name))
            if task is None:
                PeriodicTask.objects.create(name=task_name(policy.name), crontab=_crontab(cron), **wanted)
                created.append(policy.name)
                continue
            stale = {k: v for k, v in wanted.items() if getattr(task, k) != v}
            other_schedule = task.interval_id or task.solar_id or task.clocked_id
            if not stale and not other_schedule and _same_crontab(task.crontab, cron):
                unchanged.append(policy.name)
                continue
            for key, value in wanted.items():
                setattr(task, key, value)
            task.crontab = _crontab(cron)
            task.interval = task.solar = task.clocked = None
            task.save()  # save() also bumps PeriodicTasks so beat reloads
            updated.append(policy.name)
        names = {task_name(p.name) for p in policies}
        for name, task in sorted(tasks.items()):
            if name not in names and task.enabled:
                task.enabled = False
                task.save()
                removed.append(name[len(PREFIX):])
        if dry_run:
            transaction.set_rollback(True)
    return SyncResult(tuple(created), tuple(updated), tuple(unchanged), tuple(removed), dry_run)
