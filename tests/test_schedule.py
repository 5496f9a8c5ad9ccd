"""Tests of gestore_retention.schedule: django-celery-beat sync of policy schedules."""
import json

import pytest
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from gestore_retention.policy import Policy
from gestore_retention.schedule import TASK, SyncResult, sync_schedules, task_name


def policy(name="churned", schedule="0 3 * * *", description="d"):
    return Policy.from_dict({"name": name, "description": description, "subject": "demoapp.Organisation",
                             "schedule": schedule, "select": {"status": "churned"}, "action": "archive"})


@pytest.mark.django_db
def test_creates_one_task_per_policy_on_a_utc_crontab():
    result = sync_schedules([policy("a"), policy("b", "*/15 1-5 * JAN MON-FRI")])
    assert result == SyncResult(created=("a", "b"))
    task = PeriodicTask.objects.get(name="gestore-retention:b")
    assert task.task == TASK == "gestore_retention.tasks.run_policy"
    assert json.loads(task.args) == ["b"] and json.loads(task.kwargs) == {}
    assert task.enabled and task.interval is None
    c = task.crontab
    assert (c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week) == ("*/15", "1-5", "*", "1", "1-5")
    assert str(c.timezone) == "UTC"
    c.full_clean()  # django-celery-beat's own validators accept what we stored
    task.schedule  # and Celery can build the schedule


@pytest.mark.django_db
def test_sync_is_idempotent():
    sync_schedules([policy("a"), policy("b")])
    counts = (PeriodicTask.objects.count(), CrontabSchedule.objects.count())
    last_change = PeriodicTasks.last_change()
    result = sync_schedules([policy("a"), policy("b")])
    assert result == SyncResult(unchanged=("a", "b")) and not result.changed
    assert (PeriodicTask.objects.count(), CrontabSchedule.objects.count()) == counts
    assert PeriodicTasks.last_change() == last_change


@pytest.mark.django_db
def test_identical_schedules_share_one_crontab():
    sync_schedules([policy("a"), policy("b")])
    assert CrontabSchedule.objects.count() == 1


@pytest.mark.django_db
def test_schedule_change_updates_the_task():
    sync_schedules([policy("a", "0 3 * * *")])
    result = sync_schedules([policy("a", "30 4 * * 1")])
    assert result == SyncResult(updated=("a",))
    c = PeriodicTask.objects.get(name=task_name("a")).crontab
    assert (c.minute, c.hour, c.day_of_week) == ("30", "4", "1")
    assert sync_schedules([policy("a", "30 4 * * 1")]) == SyncResult(unchanged=("a",))


@pytest.mark.django_db
def test_description_and_hand_edits_are_put_back():
    sync_schedules([policy("a")])
    PeriodicTask.objects.filter(name=task_name("a")).update(args='["other"]', enabled=False)
    assert sync_schedules([policy("a")]) == SyncResult(updated=("a",))
    task = PeriodicTask.objects.get(name=task_name("a"))
    assert task.args == '["a"]' and task.enabled
    assert sync_schedules([policy("a", description="new")]) == SyncResult(updated=("a",))


@pytest.mark.django_db
def test_removed_policy_is_disabled_not_deleted_and_others_are_left_alone():
    PeriodicTask.objects.create(name="someone-else", task="x.y", crontab=CrontabSchedule.objects.create())
    sync_schedules([policy("a"), policy("b")])
    result = sync_schedules([policy("a")])
    assert result == SyncResult(unchanged=("a",), removed=("b",))
    assert not PeriodicTask.objects.get(name=task_name("b")).enabled
    assert PeriodicTask.objects.get(name="someone-else").enabled
    assert sync_schedules([policy("a")]) == SyncResult(unchanged=("a",))  # removed once
    assert sync_schedules([policy("a"), policy("b")]) == SyncResult(unchanged=("a",), updated=("b",))
    assert PeriodicTask.objects.get(name=task_name("b")).enabled


@pytest.mark.django_db
def test_dry_run_writes_nothing():
    result = sync_schedules([policy("a")], dry_run=True)
    assert result == SyncResult(created=("a",), dry_run=True)
    assert "dry run: 1 created" in str(result)
    assert not PeriodicTask.objects.exists() and not CrontabSchedule.objects.exists()


@pytest.mark.django_db
def test_default_loads_the_policy_dirs():
    result = sync_schedules()
    assert "churned-tenants" in result.created
    assert PeriodicTask.objects.get(name="gestore-retention:churned-tenants").crontab.hour == "3"
