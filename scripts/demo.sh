#!/usr/bin/env bash
# The end-to-end demo, on SQLite, in var/ (run by `make demo`):
#
#   fresh var/ -> migrate -> keygen -> gendemo -> run the churned-tenants policy
#   -> status -> verify the audit chain -> restore one erased tenant -> run again
#
# Everything lives under var/ (or $GESTORE_VAR_DIR): the database
# var/demo.sqlite3, keys in var/keys, bundles in var/bundles, files in
# var/media (see demoapp/settings.py). The `retention ...` sub-commands are
# those of gestore_retention's `retention` command; adjust the names here if
# they change.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VAR_DIR=${GESTORE_VAR_DIR:-$PWD/var}
export GESTORE_VAR_DIR=$VAR_DIR
# The demo always runs on SQLite under var/, with keys under var/keys.
unset DATABASE_URL GESTORE_RETENTION_KEYS_DIR

manage() { "$PY" manage.py "$@"; }
step_no=0
step() {
    step_no=$((step_no + 1))
    printf '\n==> [%d] %s\n' "$step_no" "$*"
}
# Prints "<active> active, <churned> churned, <held> held" organisations.
org_summary() {
    manage shell --verbosity 0 -c '
from demoapp.models import Organisation
from gestore_retention.models import LegalHold
active = Organisation.objects.filter(status="active").count()
churned = Organisation.objects.filter(status="churned").count()
held = LegalHold.objects.filter(subject_label="demoapp.Organisation", released_at__isnull=True).count()
print(f"organisations: {active} active, {churned} churned, {held} under legal hold")
'
}

step "fresh state directory: $VAR_DIR"
rm -rf "$VAR_DIR"
mkdir -p "$VAR_DIR"

step "create the database (manage.py migrate)"
manage migrate --verbosity 0
echo "database: $VAR_DIR/demo.sqlite3"

step "generate the signing and encryption keys into $VAR_DIR/keys (retention keygen)"
manage retention keygen

step "fill the database with 12 demo tenants (gendemo --tenants 12 --scale 1 --seed 42)"
manage gendemo --tenants 12 --scale 1 --seed 42
org_summary

step "run the churned-tenants policy in-process: select, export, seal, verify, erase (retention run)"
manage retention run churned-tenants
org_summary

step "what happened, per job (retention status)"
manage retention status

step "verify the hash chain of the audit log (retention audit-verify)"
manage retention audit-verify

step "run the policy again: nothing new is erased (retention run)"
before=$(org_summary)
manage retention run churned-tenants
after=$(org_summary)
echo "before: $before"
echo "after:  $after"
if [[ $before != "$after" ]]; then
    echo "error: the second run changed the organisations" >&2
    exit 1
fi
echo "nothing new was erased"

step "pick one erased tenant's bundle"
# The Bundle table knows each bundle's subject and where it is stored.
read -r SUBJECT_PK BUNDLE_ID BUNDLE < <(manage shell --verbosity 0 -c '
from django.core.files.storage import storages
from gestore_retention.models import Bundle
b = Bundle.objects.filter(subject_label="demoapp.Organisation").order_by("created_at", "id").first()
if b is None:
    raise SystemExit("no bundle of an organisation was stored: did the run erase anything?")
print(b.subject_pk, b.id, storages[b.storage].path(b.name))
')
echo "bundle: $BUNDLE (id $BUNDLE_ID)"
echo "subject: demoapp.Organisation.$SUBJECT_PK"
org_exists() {
    manage shell --verbosity 0 -c "
from demoapp.models import Organisation
o = Organisation.objects.filter(pk=$SUBJECT_PK).first()
print(f'demoapp.Organisation.$SUBJECT_PK: ' + (f'present ({o.name}, {o.projects.count()} projects, {o.invoices.count()} invoices)' if o else 'absent'))
"
}
org_exists

step "restore that tenant from its bundle file (retention restore)"
manage retention restore "$BUNDLE"
org_exists
# Still churned long ago: the next scheduled run would archive and erase it
# again, unless its status changes or a legal hold is placed on it.

step "verify the audit chain again: the restore is in it (retention audit-verify)"
manage retention audit-verify

step "done: state in $VAR_DIR (database, keys, bundles, media)"
