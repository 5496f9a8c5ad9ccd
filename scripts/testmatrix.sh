#!/usr/bin/env bash
# Run the pytest suite once per database: SQLite always, PostgreSQL and
# MariaDB/MySQL when they answer. Called by `make test`.
#
# Outside CI a database or Redis that does not answer is skipped with a
# message; under CI=true it fails the run. Exit status is non-zero when any
# run failed (pytest's exit 5, "no tests collected", counts as a failure).
#
# Environment (all optional):
#   PY                  python of the virtualenv (default .venv/bin/python)
#   DBS                 which databases, default "sqlite postgresql mariadb"
#   PG_URL              default postgres://postgres@127.0.0.1:5432/gestore
#   MYSQL_URL           default mysql://root@127.0.0.1:3306/gestore
#   CELERY_TEST_BROKER  default redis://127.0.0.1:6379/15 (tests that need a worker)
#   PYTEST_ARGS         extra pytest arguments, e.g. "-k generator -x"
#   TEST_TIMEOUT        seconds allowed per database run (default 900; a run takes 3-6 min)
#   GESTORE_TEST_DB_NAME  test database name (default test_gestore_<pid>, unique per run)
#   CI                  true/1/yes: a service that does not answer is an error
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DBS=${DBS:-sqlite postgresql mariadb}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/gestore}
MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306/gestore}
CELERY_TEST_BROKER=${CELERY_TEST_BROKER:-redis://127.0.0.1:6379/15}
PYTEST_ARGS=${PYTEST_ARGS:-}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}

case "${CI:-}" in
    true|TRUE|True|1|yes) in_ci=1 ;;
    *) in_ci=0 ;;
esac

say() { printf '%s\n' "$*"; }
probe() { "$PY" scripts/dbprobe.py --timeout 3 "$1"; }

declare -a ran=() skipped=() failed=() unavailable=() results=()

# --- stock age and minisign, for the interop tests -------------------------
bash scripts/install-interop-tools.sh

# --- Redis, for the tests that need a real Celery worker -------------------
broker=$CELERY_TEST_BROKER
if why=$(probe "$broker"); then
    export CELERY_TEST_BROKER
    say "redis: answers at $broker (${why#ok }); CELERY_TEST_BROKER exported"
else
    unset CELERY_TEST_BROKER
    if (( in_ci )); then
        say "ERROR: redis at $broker does not answer under CI: $why"
        unavailable+=("redis")
    else
        say "skipped redis: $why (worker tests will skip; CELERY_TEST_BROKER not set)"
        skipped+=("redis: $why")
    fi
fi

# --- which databases answer ------------------------------------------------
declare -a plan=()
for db in $DBS; do
    case "$db" in
        sqlite) url="sqlite://" ;;  # in-memory test database; NAME falls back to var/
        postgresql|postgres) db=postgresql; url=$PG_URL ;;
        mariadb|mysql) db=mariadb; url=$MYSQL_URL ;;
        *) say "ERROR: unknown database '$db' in DBS (use sqlite, postgresql, mariadb)"; exit 2 ;;
    esac
    if [[ $db == sqlite ]]; then
        plan+=("$db|$url")
    elif why=$(probe "$url"); then
        say "$db: answers at $url (${why#ok })"
        plan+=("$db|$url")
    elif (( in_ci )); then
        say "ERROR: $db at $url does not answer under CI: $why"
        unavailable+=("$db")
    else
        say "skipped $db: $why"
        skipped+=("$db: $why")
    fi
done

if (( ${#unavailable[@]} )); then
    say "FAILED: under CI=true every service must answer; missing: ${unavailable[*]}"
    exit 1
fi

# --- one pytest run per database --------------------------------------------
for entry in "${plan[@]}"; do
    db=${entry%%|*}
    url=${entry#*|}
    say ""
    say "======== pytest on $db (DATABASE_URL=$url) ========"
    # A private var dir per run: media files and keys that tests write never
    # touch the demo's var/.
    vardir=$(mktemp -d "${TMPDIR:-/tmp}/gestore-test-$db.XXXXXX")
    # A test database of its own (PostgreSQL/MariaDB): two runs on one server,
    # e.g. two people's, must not drop each other's test_gestore.
    testdb=${GESTORE_TEST_DB_NAME:-test_gestore_$$}
    # shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
    DATABASE_URL=$url GESTORE_VAR_DIR=$vardir GESTORE_TEST_DB_NAME=$testdb \
        timeout --kill-after=30 "$TEST_TIMEOUT" "$PY" -m pytest -p no:cacheprovider $PYTEST_ARGS
    rc=$?
    rm -rf "$vardir"
    if [[ $rc == 124 || $rc == 137 ]] && [[ $db != sqlite ]]; then
        echo
        "$PY" scripts/dbprobe.py --drop-test-db "$testdb" "$url" || true  # killed: pytest could not drop it
    fi
    case $rc in
        0) result="passed"; ran+=("$db") ;;
        5) result="FAILED (pytest collected no tests, exit 5)"; failed+=("$db") ;;
        124|137) result="FAILED (timed out after ${TEST_TIMEOUT}s)"; failed+=("$db") ;;
        *) result="FAILED (pytest exit $rc)"; failed+=("$db") ;;
    esac
    say "ran on $db: $result"
    results+=("ran on $db: $result")
done

# --- summary -----------------------------------------------------------------
say ""
say "======== test summary ========"
for line in "${results[@]}"; do say "$line"; done
for s in "${skipped[@]}"; do say "skipped $s"; done
say "databases run: $(( ${#ran[@]} + ${#failed[@]} )) (passed: ${ran[*]:-none}; failed: ${failed[*]:-none})"
if (( ${#failed[@]} )); then
    say "RESULT: FAILED on ${failed[*]}"
    exit 1
fi
if (( ${#ran[@]} == 0 )); then
    say "RESULT: FAILED, no database was run"
    exit 1
fi
say "RESULT: passed on ${ran[*]}"
