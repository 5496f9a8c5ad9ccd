"""Project infrastructure: every management command documents itself, and the
helper scripts behave (the database probe, the demo script's syntax)."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parent.parent
OUR_APPS = ("gestore_retention", "demoapp")
COMMANDS = sorted((name, app) for name, app in get_commands().items() if app in OUR_APPS)


def test_the_project_has_commands():
    assert ("gendemo", "demoapp") in COMMANDS


@pytest.mark.parametrize("name, app", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_help(name, app):
    command = load_command_class(app, name)
    assert len((command.help or "").strip()) >= 40, f"{name}: `help` should say what the command does"
    parser = command.create_parser("manage.py", name)
    text = parser.format_help()
    assert f"manage.py {name}" in text
    assert " ".join(command.help.split()[:4]) in " ".join(text.split())
    # Every option and sub-command says what it is for.
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            assert action.help, f"{name} {action.option_strings[0]} has no help"
        for choice in getattr(action, "_choices_actions", []):
            assert (choice.help or "").strip(), f"{name} {choice.dest}: sub-command has no help"
            sub = action.choices[choice.dest]
            sub.format_help()


def _probe(url, timeout=3):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dbprobe.py"), "--timeout", str(timeout), url],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("url", [
    "postgres://postgres@127.0.0.1:1/gestore",
    "mysql://root@127.0.0.1:1/gestore",
    "redis://127.0.0.1:1/15",
])
def test_dbprobe_reports_a_server_that_does_not_answer(url):
    started = time.monotonic()
    result = _probe(url)
    assert result.returncode == 1
    assert result.stdout.strip() and "Traceback" not in result.stdout + result.stderr
    assert time.monotonic() - started < 15


def test_dbprobe_sqlite_and_bad_scheme():
    assert _probe("sqlite://").stdout.startswith("ok SQLite")
    bad = _probe("ftp://example/x")
    assert bad.returncode == 1 and "unsupported URL scheme" in bad.stdout


@pytest.mark.parametrize("script", ["scripts/demo.sh", "scripts/testmatrix.sh", ".ci/run"])
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_dbprobe_drops_only_test_databases():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dbprobe.py"), "--drop-test-db", "gestore",
         "postgres://postgres@127.0.0.1:1/gestore"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1 and "only test_* databases" in result.stdout
