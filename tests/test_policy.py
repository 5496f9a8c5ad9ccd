"""Tests of gestore_retention.policy: loading, validation messages, selection."""
import datetime as dt
import hashlib
from pathlib import Path

import pytest

from gestore_retention import holds
from gestore_retention.errors import PolicyError
from gestore_retention.policy import Policy, ScopeSpec, get_policy, load_policies, load_policy, parse_cron

POLICIES = Path(__file__).resolve().parent.parent / "policies"
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)

BASE = """\
name = "p"
subject = "demoapp.Organisation"
schedule = "0 3 * * *"
select = { status = "churned" }
action = "archive"
"""


def write(tmp_path, text, name="x.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def base(**over):
    d = {"name": "p", "subject": "demoapp.Organisation", "schedule": "0 3 * * *",
         "select": {"status": "churned"}, "action": "archive"}
    d.update(over)
    return d


# -- loading ----------------------------------------------------------------

def test_demo_policy_loads():
    p = load_policy(POLICIES / "churned-tenants.toml")
    assert p.name == "churned-tenants"
    assert p.subject == "demoapp.Organisation"
    assert dict(p.select) == {"status": "churned", "churned_at__lt": "-90d"}
    assert p.action == "archive-and-erase"
    assert p.scope == ScopeSpec(boundaries=("demoapp.Organisation",), exclude_models=())
    assert p.storage == "retention" and p.keep_for == dt.timedelta(days=400)
    assert p.text_hash == hashlib.sha256((POLICIES / "churned-tenants.toml").read_bytes()).hexdigest()
    assert p.cron == {"minute": "0", "hour": "3", "day_of_month": "*", "month_of_year": "*", "day_of_week": "*"}


def test_load_policies_uses_the_setting_and_get_policy_finds_by_name_or_path():
    policies = load_policies()
    assert "churned-tenants" in policies
    assert get_policy("churned-tenants") == policies["churned-tenants"]
    assert get_policy(str(POLICIES / "churned-tenants.toml")).name == "churned-tenants"
    with pytest.raises(PolicyError, match='unknown policy "nope".*churned-tenants'):
        get_policy("nope")


def test_policy_is_frozen_and_hashable():
    p = load_policy(POLICIES / "churned-tenants.toml")
    with pytest.raises(Exception):
        p.name = "other"
    with pytest.raises(TypeError):
        p.select["status"] = "active"
    assert hash(p) == hash(load_policy(POLICIES / "churned-tenants.toml"))


def test_duplicate_names_across_files_name_both(tmp_path):
    write(tmp_path, BASE, "a.toml")
    write(tmp_path, BASE, "b.toml")
    with pytest.raises(PolicyError, match=r'b\.toml: key "name": policy "p" is already defined in .*a\.toml'):
        load_policies([tmp_path])


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        load_policies([tmp_path / "nope"])


def test_text_hash_changes_with_the_text(tmp_path):
    a = load_policy(write(tmp_path, BASE, "a.toml"))
    b = load_policy(write(tmp_path, BASE + "# reviewed\n", "b.toml"))
    assert a.text_hash != b.text_hash


def test_python_api_validates_and_hashes_the_canonical_definition():
    p = Policy.from_dict(base())
    assert p.source == "<python>"
    assert p.text_hash == Policy.from_dict(dict(reversed(list(base().items())))).text_hash
    assert p.text_hash != Policy.from_dict(base(description="x")).text_hash
    assert Policy.from_dict(p.to_dict()).to_dict() == p.to_dict()
    with pytest.raises(PolicyError, match=r'<python>: key "select.nope": unknown field "nope"'):
        Policy.from_dict(base(select={"nope": 1}))


# -- validation messages name the file and the key -------------------------

@pytest.mark.parametrize("text, message", [
    ('name = "p"\nfoo = 1\n', 'key "foo": unknown key'),
    (BASE.replace('action = "archive"\n', ""), 'key "action": missing'),
    (BASE.replace('name = "p"', "name = 3"), 'key "name": expected a string, got int'),
    (BASE.replace('name = "p"', 'name = "Bad Name"'), 'key "name"'),
    (BASE.replace("demoapp.Organisation", "demoapp.Nope"), 'key "subject": unknown model "demoapp.Nope"'),
    (BASE.replace("{ status", "{ statuss"), 'key "select.statuss": unknown field "statuss" on demoapp.Organisation'),
    (BASE.replace('{ status = "churned" }', '{ churnedd_at__lt = "-90d" }'),
     'key "select.churnedd_at__lt": unknown field "churnedd_at" on demoapp.Organisation'),
    (BASE.replace('{ status = "churned" }', '{ churned_at__lte_ = "-90d" }'),
     'key "select.churned_at__lte_": unknown lookup "lte_" for field "churned_at"'),
    (BASE.replace('{ status = "churned" }', '{ owner__usernme = "x" }'),
     'key "select.owner__usernme": unknown field "usernme" on auth.User'),
    (BASE.replace('{ status = "churned" }', '{ churned_at__lt = "-90m" }'),
     'key "select.churned_at__lt": invalid relative-time value'),
    (BASE.replace('{ status = "churned" }', '{ churned_at__lt = "last year" }'),
     'key "select.churned_at__lt": invalid relative-time value'),
    (BASE.replace('{ status = "churned" }', "{ churned_at__lt = 90 }"), 'key "select.churned_at__lt": expected a relative'),
    (BASE.replace('{ status = "churned" }', '{ id = "abc" }'), 'key "select.id": .*expected a number'),
    (BASE.replace('{ status = "churned" }', '{ churned_at__isnull = "yes" }'), 'key "select.churned_at__isnull": isnull'),
    (BASE.replace('{ status = "churned" }', "{}"), 'key "select": must hold at least one'),
    (BASE.replace('{ status = "churned" }', '"status"'), 'key "select": expected a table'),
    (BASE + 'exclude = { nope = 1 }\n', 'key "exclude.nope": unknown field'),
    (BASE.replace("0 3 * * *", "0 3 * *"), 'key "schedule": cron .* must have 5 fields'),
    (BASE.replace("0 3 * * *", "61 3 * * *"), 'key "schedule": cron field minute: 61 is out of range 0-59'),
    (BASE.replace("0 3 * * *", "0 3 * * FUN"), 'key "schedule": cron field day_of_week'),
    (BASE.replace("0 3 * * *", "*/0 3 * * *"), 'key "schedule": cron field minute: bad step'),
    (BASE.replace("0 3 * * *", "0 5-3 * * *"), 'key "schedule": .*runs backwards'),
    (BASE.replace('"archive"', '"shred"'), 'key "action": unknown action'),
    (BASE + '[scope]\nboundaries = ["demoapp.Nope"]\n', 'key "scope.boundaries": unknown model "demoapp.Nope"'),
    (BASE + '[scope]\nboundaries = "demoapp.Organisation"\n', 'key "scope.boundaries": expected a list'),
    (BASE + '[scope]\nwalls = []\n', 'key "scope.walls": unknown key'),
    (BASE + '[bundle]\nstorage = "s3"\n', 'key "bundle.storage": unknown storage alias "s3"'),
    (BASE + '[bundle]\nkeep_for = "400"\n', 'key "bundle.keep_for": invalid duration'),
    (BASE + '[bundle]\nkeep_for = "-4d"\n', 'key "bundle.keep_for": invalid duration'),
    (BASE + '[bundle]\nkeep_for = 400\n', 'key "bundle.keep_for": expected a string'),
    (BASE + '[bundle]\nkeepfor = "4d"\n', 'key "bundle.keepfor": unknown key'),
    ('name = "p"\nname = "q"\n', "invalid TOML"),
])
def test_invalid_policy_files_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(PolicyError, match=r"bad\.toml: " + message.replace("(", r"\(")) as info:
        load_policy(path)
    assert str(path.name) in str(info.value)


def test_unreadable_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError, match=r"missing\.toml: cannot read"):
        load_policy(tmp_path / "missing.toml")


@pytest.mark.parametrize("select", [
    {"churned_at__lt": "-90d"},
    {"churned_at__gte": "-12h", "churned_at__lt": "+2w"},
    {"churned_at__lt": "2024-01-31"},
    {"churned_at__lt": "2024-01-31T10:00:00+02:00"},
    {"churned_at__lt": dt.datetime(2024, 1, 31)},
    {"churned_at__date__lt": "-1d"},
    {"churned_at__year__gte": 2020},
    {"churned_at__range": ["-30d", "-1d"]},
    {"churned_at__isnull": False},
    {"owner__username__startswith": "x"},
    {"projects__tasks__done": True},
    {"memberships__joined_on__lt": "-1w"},
    {"settings__plan": "free"},
    {"monthly_price__gt": 10.5},
    {"status__in": ["churned", "active"]},
    {"pk__gt": 0},
])
def test_valid_lookups_are_accepted(select):
    Policy.from_dict(base(select=select))


def test_cron_parsing():
    assert parse_cron("*/15 1-5 1,15 JAN-MAR MON-FRI") == {
        "minute": "*/15", "hour": "1-5", "day_of_month": "1,15", "month_of_year": "1-3", "day_of_week": "1-5"}
    assert parse_cron("0 0 * * 7")["day_of_week"] == "0"
    assert parse_cron("0 0 * * 5-7")["day_of_week"] == "5,6,0"
    assert parse_cron("0 0 * * sun")["day_of_week"] == "0"
    assert parse_cron("0 0-23/6 * * *")["hour"] == "0-23/6"


# -- selection --------------------------------------------------------------

@pytest.fixture
def orgs(db):
    from demoapp.models import Organisation

    def make(slug, status, churned_days_ago):
        churned = NOW - dt.timedelta(days=churned_days_ago) if churned_days_ago is not None else None
        return Organisation.objects.create(name=slug, slug=slug, status=status,
                                           created_at=NOW - dt.timedelta(days=1000), churned_at=churned)
    return {
        "old": make("old", "churned", 200),
        "old2": make("old2", "churned", 120),
        "recent": make("recent", "churned", 10),
        "active": make("active", "active", None),
        "held": make("held", "churned", 300),
    }


def test_queryset_resolves_relative_times_against_now(orgs):
    p = load_policy(POLICIES / "churned-tenants.toml")
    slugs = list(p.queryset(now=NOW).values_list("slug", flat=True))
    assert slugs == ["old", "old2", "held"]
    later = NOW + dt.timedelta(days=90)
    assert "recent" in set(p.queryset(now=later).values_list("slug", flat=True))
    with pytest.raises(ValueError):
        p.queryset(now=dt.datetime(2026, 1, 1))


def test_active_legal_holds_are_excluded(orgs):
    p = load_policy(POLICIES / "churned-tenants.toml")
    holds.place_hold("demoapp.Organisation", orgs["held"].pk, reason="CASE-1", now=NOW)
    assert list(p.queryset(now=NOW).values_list("slug", flat=True)) == ["old", "old2"]
    holds.release_hold("demoapp.Organisation", orgs["held"].pk, now=NOW)
    assert "held" in set(p.queryset(now=NOW).values_list("slug", flat=True))


def test_hold_on_the_concrete_model_excludes_from_a_proxy_policy(orgs):
    p = Policy.from_dict(base(subject="demoapp.ChurnedOrganisation", select={"churned_at__lt": "-90d"}))
    holds.place_hold("demoapp.Organisation", orgs["old"].pk, reason="CASE-2", now=NOW)
    assert list(p.queryset(now=NOW).values_list("slug", flat=True)) == ["old2", "held"]


def test_each_exclude_condition_leaves_subjects_alone(orgs):
    p = Policy.from_dict(base(select={"status": "churned"},
                              exclude={"slug": "old", "churned_at__gt": "-30d"}))
    assert list(p.queryset(now=NOW).values_list("slug", flat=True)) == ["old2", "held"]


def test_to_many_paths_do_not_repeat_subjects(orgs):
    from demoapp.models import Project

    for i in range(3):
        Project.objects.create(org=orgs["old"], name=f"p{i}", budget=1, starts_on=NOW.date(),
                               estimate=dt.timedelta(hours=1))
    p = Policy.from_dict(base(select={"projects__budget__gte": 1}))
    assert list(p.queryset(now=NOW).values_list("slug", flat=True)) == ["old"]


def test_select_batches_are_bounded_and_in_pk_order(orgs):
    p = Policy.from_dict(base(select={"status": "churned"}))
    batches = list(p.select_batches(now=NOW, batch_size=2))
    assert [len(b) for b in batches] == [2, 2]
    flat = [pk for b in batches for pk in b]
    assert flat == sorted(flat) == [orgs[s].pk for s in ("old", "old2", "recent", "held")]
    assert list(p.select_batches(now=NOW, batch_size=10)) == [flat]
