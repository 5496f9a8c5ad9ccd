"""Celery tasks: one-line wrappers taking names and ids, never objects.

`run_policy` selects the subjects and fans out one `process_job` task per
subject, so adding workers adds throughput. django-celery-beat's database
scheduler triggers `run_policy` (see `retention sync-schedules`).
"""
from celery import shared_task

from . import sweep
from .policy import get_policy


@shared_task(name="gestore_retention.tasks.run_policy")
def run_policy(policy_name, using="default"):
    """Start a run of `policy_name` and queue one job task per open job."""
    policy = get_policy(policy_name)
    run = sweep.start_run(policy, using=using)
    job_ids = list(sweep.open_jobs(policy, using).values_list("pk", flat=True))
    for job_id in job_ids:
        process_job.delay(job_id, policy_name, using)
    return {"run": run.pk, "jobs": len(job_ids)}


@shared_task(name="gestore_retention.tasks.process_job", acks_late=True)
def process_job(job_id, policy_name, using="default"):
    """Drive one job as far as it goes (idempotent: a duplicate delivery is harmless)."""
    return sweep.process_job(job_id, get_policy(policy_name), using=using)
