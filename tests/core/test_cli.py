"""The `jaejin` command against the test database: clients, users, migrations, audit
verification, the demo, and settings that refuse to run production unsafely."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner, Result

from jaejin.cli import app as cli_app
from jaejin.core import database
from jaejin.core.accounts import ApiClient, Role, User
from jaejin.core.audit import AuditEntry, seal_pending, verify_chain
from jaejin.core.config import (
    DEVELOPMENT_SECRET_KEY,
    InsecureConfiguration,
    Settings,
    get_settings,
)
from jaejin.core.security import verify_password
from jaejin.directory.store import Institution, Patient
from tests.core.helpers import audit_entries, count_rows, fresh
from tests.support import PASSWORD, Person, bearer, client_token, sign_in

Jaejin = Callable[..., Result]
GOOD_SECRET = "k" * 48


@pytest.fixture
def jaejin(monkeypatch, database_url, clean_database) -> Iterator[Jaejin]:
    """Run `jaejin ...` as an operator would, configured by environment variables."""
    monkeypatch.setenv("JAEJIN_DATABASE_URL", database_url)
    monkeypatch.setenv("JAEJIN_ENVIRONMENT", "test")
    get_settings.cache_clear()
    database._engine_for.cache_clear()
    runner = CliRunner()

    def run(*arguments: str) -> Result:
        return runner.invoke(cli_app, list(arguments), catch_exceptions=False)

    yield run
    database._engine_for(get_settings().database_url).dispose()
    database._engine_for.cache_clear()
    get_settings.cache_clear()


# ------------------------------------------------------------------------------------- clients


def test_client_create_prints_its_credentials_once_as_json_and_they_work(jaejin, client,
                                                                          actors):
    result = jaejin("client", "create", "--institution", "INST-A", "--scope", "directory.read",
                    "--scope", "directory.write", "--name", "hospital information system")
    assert result.exit_code == 0, result.output
    credentials = json.loads(result.stdout)
    assert set(credentials) == {"client_id", "client_secret"}
    assert result.stdout.count(credentials["client_secret"]) == 1
    with fresh(client.app.state.engine) as session:
        stored = session.execute(select(ApiClient).where(
            ApiClient.client_id == credentials["client_id"])).scalar_one()
        assert stored.scopes == ["directory.read", "directory.write"]
        assert stored.institution_id == actors.a.id
        assert stored.secret_hash.startswith("$argon2id$")
        assert credentials["client_secret"] not in stored.secret_hash
        assert verify_password(stored.secret_hash, credentials["client_secret"])
    token = client_token(client, (credentials["client_id"], credentials["client_secret"]))
    found = client.get("/api/v1/patients", params={"mrn": "MRN-A-1"}, headers=bearer(token))
    assert [p["mrn"] for p in found.json()] == ["MRN-A-1"]
    second = json.loads(jaejin("client", "create", "--institution", "INST-A", "--scope",
                               "directory.read").stdout)
    assert second["client_id"] != credentials["client_id"]
    assert second["client_secret"] != credentials["client_secret"]


def test_client_create_refuses_an_unknown_institution_and_creates_nothing(jaejin, client,
                                                                         actors):
    before = count_rows(client.app.state.engine, ApiClient)
    result = jaejin("client", "create", "--institution", "NOPE", "--scope", "directory.read")
    assert result.exit_code == 2
    assert "NOPE" in result.stderr
    assert result.stdout == ""
    assert count_rows(client.app.state.engine, ApiClient) == before


def test_client_create_refuses_an_unknown_scope_and_creates_nothing(jaejin, client, actors):
    before = count_rows(client.app.state.engine, ApiClient)
    result = jaejin("client", "create", "--institution", "INST-A", "--scope", "directory.read",
                    "--scope", "everything")
    assert result.exit_code == 2
    assert "UNKNOWN_SCOPE" in result.stderr and "everything" in result.stderr
    assert count_rows(client.app.state.engine, ApiClient) == before


# --------------------------------------------------------------------------------------- users


def test_user_create_makes_a_staff_account_that_can_sign_in(jaejin, client, actors):
    result = jaejin("user", "create", "--email", "New.Coordinator@Test.Example", "--name",
                    "New Coordinator", "--role", "coordinator", "--institution", "INST-A",
                    "--password", PASSWORD, "--language", "en")
    assert result.exit_code == 0, result.output
    with fresh(client.app.state.engine) as session:
        user = session.execute(select(User).where(
            User.email == "new.coordinator@test.example")).scalar_one()
        assert user.roles == {Role.COORDINATOR}
        assert [m.institution_id for m in user.memberships] == [actors.a.id]

    sign_in(client, Person(user, Role.COORDINATOR, actors.a))
    institutions = client.get("/api/v1/institutions").json()
    assert [i["code"] for i in institutions] == ["INST-A"]


@pytest.mark.parametrize(("arguments", "message"), [
    (("--institution", "NOPE"), "NOPE"),
    (("--password", "short"), "at least 10 characters"),
    (("--email", "coordinator.a@test.example"), "EMAIL_TAKEN"),
    (("--role", "emperor"), "emperor"),
    (("--role", "patient"), "invitation"),
    (("--role", "system_client"), "jaejin client create"),
])
def test_user_create_refuses_bad_input_and_creates_nobody(jaejin, client, actors, arguments,
                                                          message):
    options = {"--email": "someone@test.example", "--name": "Someone",
               "--role": "coordinator", "--institution": "INST-A", "--password": PASSWORD}
    options.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    before = count_rows(client.app.state.engine, User)
    result = jaejin("user", "create", *[part for pair in options.items() for part in pair])
    assert result.exit_code == 2
    assert message in result.output
    assert count_rows(client.app.state.engine, User) == before


# ---------------------------------------------------------------------------------- migrations


def _applied_revisions(engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_db_upgrade_can_run_again_without_changing_anything(jaejin, engine, database_url,
                                                            actors):
    from alembic.script import ScriptDirectory

    from jaejin.core.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(database_url))

    def applied_with_ancestors() -> set[str]:
        seen: set[str] = set()
        pending = list(_applied_revisions(engine))
        while pending:
            revision = script.get_revision(pending.pop())
            if revision is None or revision.revision in seen:
                continue
            seen.add(revision.revision)
            for parents in (revision.down_revision, revision.dependencies):
                pending += [parents] if isinstance(parents, str) else list(parents or ())
        return seen

    before = count_rows(engine, User, Institution, Patient, AuditEntry)
    versions = _applied_revisions(engine)
    for _ in range(2):
        result = jaejin("db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "database is up to date" in result.output
        assert _applied_revisions(engine) == versions
        assert applied_with_ancestors() == {rev.revision for rev in script.walk_revisions()}
    assert count_rows(engine, User, Institution, Patient, AuditEntry) == before


# --------------------------------------------------------------------------------------- audit


def _sequences(engine) -> list[int]:
    with fresh(engine) as session:
        return list(session.execute(select(AuditEntry.sequence)
                                    .order_by(AuditEntry.sequence)).scalars())


@pytest.fixture
def trail(client, actors) -> list[int]:
    """An audit trail with a few entries of real API use."""
    token = client_token(client, actors.clients["a"])
    for _ in range(3):
        client.get(f"/api/v1/patients/{actors.patients['a'].id}", headers=bearer(token))
    seal_pending(client.app.state.engine)  # as the worker does within a second
    sequences = _sequences(client.app.state.engine)
    assert len(sequences) >= 6
    return sequences


def test_audit_verify_seals_the_entries_waiting_first(jaejin, client, actors):
    token = client_token(client, actors.clients["a"])
    client.get(f"/api/v1/patients/{actors.patients['a'].id}", headers=bearer(token))
    waiting = len(audit_entries(client.app.state.engine))
    result = jaejin("audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"{waiting} entries were waiting to be sealed, the oldest for " in result.output
    assert f"audit chain intact: {waiting} entries verified in 1 chains" in result.output
    assert all(entry.sealed for entry in audit_entries(client.app.state.engine))


def test_the_worker_seals_the_audit_trail(jaejin, client, actors):
    token = client_token(client, actors.clients["a"])
    client.get(f"/api/v1/patients/{actors.patients['a'].id}", headers=bearer(token))
    waiting = len(audit_entries(client.app.state.engine))
    result = jaejin("worker", "--once")
    assert result.exit_code == 0, result.output
    assert f"sealed {waiting} audit entries" in result.output
    assert all(entry.sealed for entry in audit_entries(client.app.state.engine))


def test_audit_verify_passes_an_intact_chain(jaejin, trail):
    result = jaejin("audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"audit chain intact: {len(trail)} entries verified" in result.output


def test_audit_verify_names_an_entry_whose_detail_was_edited(jaejin, engine, trail):
    edited = trail[len(trail) // 2]
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_log SET detail = :detail WHERE sequence = :s"),
                           {"detail": json.dumps({"covered": "up"}), "s": edited})
    result = jaejin("audit", "verify")
    assert result.exit_code == 1
    assert f"chain 1, entry {edited}: content does not match its hash (edited)" in result.stderr
    assert "audit chain BROKEN: 1 problems" in result.stderr


def test_audit_verify_catches_an_edit_even_when_the_forger_rehashes_the_entry(jaejin, engine,
                                                                             trail):
    from jaejin.core.audit import _content_hash, _hashed_fields

    edited = trail[1]
    with fresh(engine) as session:
        entry = session.execute(select(AuditEntry).where(AuditEntry.sequence == edited)
                                ).scalar_one()
        entry.purpose = "research"
        entry.entry_hash = _content_hash(_hashed_fields(entry), entry.previous_hash)
        session.commit()
    result = jaejin("audit", "verify")
    assert result.exit_code == 1
    assert f"chain 1, entry {edited + 1}: link to the previous entry is broken" in result.output


def test_audit_verify_catches_a_deleted_entry_in_the_middle(jaejin, engine, trail):
    deleted = trail[2]
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE sequence = :s"), {"s": deleted})
    result = jaejin("audit", "verify")
    assert result.exit_code == 1
    assert f"entries {deleted}..{deleted} are missing (deleted)" in result.output


def test_audit_verify_catches_the_newest_entry_deleted(jaejin, engine, trail):
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE sequence = :s"), {"s": trail[-1]})
    result = jaejin("audit", "verify")
    assert result.exit_code == 1
    assert f"the chain ends at {trail[-2]} but {trail[-1]} entries were written" in \
        result.output


def test_audit_verify_catches_the_chain_head_deleted_with_the_newest_entries(jaejin, engine,
                                                                            trail):
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_log WHERE sequence = :s"), {"s": trail[-1]})
        connection.execute(text("DELETE FROM audit_chain_head"))
    result = jaejin("audit", "verify")
    assert result.exit_code == 1
    assert "chain 1: the chain head is missing (deleted)" in result.stderr


def test_an_empty_audit_trail_is_intact(jaejin, clean_database):
    with fresh(clean_database) as session:
        assert verify_chain(session).intact
    assert jaejin("audit", "verify").exit_code == 0


# ---------------------------------------------------------------------------------------- demo


def test_the_demo_loads_three_institutions_once(jaejin, engine):
    first = jaejin("demo")
    assert first.exit_code == 0, first.output
    assert "dr.kim@seoul-derm.demo" in first.output
    counts = count_rows(engine, Institution, Patient, User)
    assert counts["institutions"] == 3
    again = jaejin("demo")
    assert again.exit_code == 0, again.output
    assert count_rows(engine, Institution, Patient, User) == counts
    with fresh(engine) as session:
        assert verify_chain(session).intact


# ------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(("overrides", "complaint"), [
    ({}, "JAEJIN_SECRET_KEY"),
    ({"secret_key": DEVELOPMENT_SECRET_KEY}, "JAEJIN_SECRET_KEY"),
    ({"secret_key": "too-short-a-secret"}, "JAEJIN_SECRET_KEY"),
    ({"secret_key": GOOD_SECRET, "public_base_url": "http://jaejin.example"},
     "JAEJIN_PUBLIC_BASE_URL"),
])
def test_production_refuses_unsafe_settings(overrides, complaint):
    values = {"environment": "production", "public_base_url": "https://jaejin.example"}
    with pytest.raises(InsecureConfiguration, match=complaint):
        Settings(**(values | overrides))


def test_production_starts_with_a_real_secret_and_https(monkeypatch):
    monkeypatch.setenv("JAEJIN_ENVIRONMENT", "production")
    monkeypatch.setenv("JAEJIN_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("JAEJIN_PUBLIC_BASE_URL", "https://jaejin.example")
    settings = Settings()
    assert settings.secure_cookies


def test_the_application_refuses_to_start_in_production_with_the_default_secret(monkeypatch):
    from jaejin.app import create_app

    monkeypatch.setenv("JAEJIN_ENVIRONMENT", "production")
    monkeypatch.setenv("JAEJIN_PUBLIC_BASE_URL", "https://jaejin.example")
    monkeypatch.delenv("JAEJIN_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(InsecureConfiguration):
            create_app()
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("url", ["postgres://u@db/jaejin", "postgresql://u@db/jaejin"])
def test_a_plain_postgresql_url_is_driven_by_psycopg_3(url):
    assert Settings(database_url=url).database_url == "postgresql+psycopg://u@db/jaejin"
