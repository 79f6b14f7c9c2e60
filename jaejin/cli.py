"""The `jaejin` command: serve, demo, migrate, accounts and clients, audit verification."""

from __future__ import annotations

import importlib
import json
import logging
import time
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.config import get_settings
from jaejin.core.database import get_engine, session_scope
from jaejin.core.errors import Problem
from jaejin.core.i18n import translate

app = typer.Typer(help="Jaejin: telemedicine follow-up platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
client_app = typer.Typer(help="OAuth system clients (hospital systems, device gateways).",
                         no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")
app.add_typer(audit_app, name="audit")
console = Console()

#: Capabilities that add their own command groups: (module, Typer attribute, name).
CAPABILITY_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("jaejin.policy.cli", "policy_cli", "policy"),
    ("jaejin.monitoring.cli", "monitoring_cli", "monitoring"),
)
for _module, _attribute, _name in CAPABILITY_COMMANDS:
    try:
        app.add_typer(getattr(importlib.import_module(_module), _attribute), name=_name)
    except ModuleNotFoundError as missing:
        if missing.name != _module:
            raise


def _problem_text(problem: Problem) -> str:
    """A refusal as an operator reads it: the code, the message, and what each field needs."""
    lines = [f"{problem.code}: {translate('en', problem.message, **problem.params)}"]
    lines += [f"  {error.field}: {error.rendered('en')['message']}" for error in problem.errors]
    return "\n".join(lines)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(
        help="Worker processes; with several, this process accepts the connections and hands "
             "them out evenly.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    log_level: Annotated[str | None, typer.Option(
        help="uvicorn's log level (critical, error, warning, info, debug, trace).")] = None,
    loop: Annotated[str, typer.Option(help="Event loop: auto (uvloop when installed), "
                                           "asyncio or uvloop.")] = "auto",
    http: Annotated[str, typer.Option(help="HTTP parser: auto (httptools when installed), "
                                           "h11 or httptools.")] = "auto",
    asgi_app: Annotated[str, typer.Option(
        "--app", hidden=True, help="Another ASGI app's import string (benchmarks' floor).",
    )] = "jaejin.asgi:app",
) -> None:
    """Serve the web application and API."""
    from jaejin.core.serving import serve as serve_app
    from jaejin.jobs import start_audit_sealer

    settings = get_settings()
    if migrate:
        from jaejin.core.migrate import upgrade

        upgrade(settings.database_url)
    # In this process, beside the server (or its worker processes): audit entries written by
    # the web application are sealed even where no `jaejin worker` runs (`make demo`).
    start_audit_sealer(get_engine(settings))
    serve_app(asgi_app, host=host, port=port, workers=workers, access_log=access_log,
              forwarded_allow_ips=",".join(settings.trusted_proxies), log_level=log_level,
              loop=loop, http=http)


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Deliver what is due, then exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
) -> None:
    """Deliver the outbox (e-mail, SMS, reminders), run scheduled checks, seal the audit trail."""
    from jaejin.core.audit import seal_pending
    from jaejin.core.events import deliver_due
    from jaejin.jobs import load_handlers, run_scheduled, start_audit_sealer

    logging.basicConfig(level=logging.INFO)
    load_handlers()
    engine = get_engine()
    if not once:
        start_audit_sealer(engine)
    while True:
        delivered = deliver_due(engine)
        run_scheduled(engine)
        if once:
            sealed = seal_pending(engine).sealed
            console.print(f"delivered {delivered}, sealed {sealed} audit entries")
            return
        time.sleep(interval)


@app.command()
def demo(
    serve_after: Annotated[bool, typer.Option("--serve", help="Serve after loading.")] = False,
    port: Annotated[int, typer.Option(help="Port when serving.")] = 8000,
) -> None:
    """Load the demo data set into the configured database (idempotent)."""
    import pyotp
    from rich.table import Table

    from jaejin.core.migrate import upgrade
    from jaejin.demo import DEMO_PASSWORD, DEMO_TOTP_SECRET, load_demo

    settings = get_settings()
    upgrade(settings.database_url)
    logins = load_demo(get_engine(settings))
    table = Table(title="Jaejin demo logins", show_lines=False)
    for column in ("role", "e-mail", "notes"):
        table.add_column(column)
    for role, email, note in logins:
        table.add_row(role, email, note)
    Console(width=160).print(table)
    console.print(f"Password for every demo account: [cyan]{DEMO_PASSWORD}[/cyan]")
    console.print("Clinicians and admins use two-factor sign-in; demo authenticator key: "
                  f"[cyan]{DEMO_TOTP_SECRET}[/cyan] (current code: "
                  f"[cyan]{pyotp.TOTP(DEMO_TOTP_SECRET).now()}[/cyan])")
    if serve_after:
        serve(port=port, migrate=False)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "heads") -> None:
    """Apply schema migrations."""
    from jaejin.core.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    console.print("database is up to date")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option(help="Display name.")],
    role: Annotated[Role, typer.Option(help="Role at the institution.")],
    institution: Annotated[str, typer.Option(help="Institution code.")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                          confirmation_prompt=True)],
    language: Annotated[str, typer.Option()] = "ko",
) -> None:
    """Create a staff account (patients join by invitation)."""
    from jaejin.accounts.service import create_user
    from jaejin.directory.store import Institution

    if role in (Role.PATIENT, Role.SYSTEM_CLIENT):
        # A person holding these roles would skip what they rest on: the in-person visit and
        # invitation for patients, client credentials and scopes for systems.
        typer.echo(f"{role.value} accounts are not made here: patients accept an invitation, "
                   "systems use `jaejin client create`.", err=True)
        raise typer.Exit(2)
    with session_scope() as db:
        found = db.execute(select(Institution).where(Institution.code == institution)
                           ).scalar_one_or_none()
        if found is None:
            typer.echo(f"no institution with code {institution!r}", err=True)
            raise typer.Exit(2)
        try:
            user = create_user(db, email=email, password=password, display_name=name,
                               language=language, memberships=[(found.id, role)])
        except Problem as problem:
            typer.echo(_problem_text(problem), err=True)
            raise typer.Exit(2) from None
        console.print(f"created user {user.id} <{user.email}> as {role.value}")


@client_app.command("create")
def client_create(
    institution: Annotated[str, typer.Option(help="Institution code.")],
    scope: Annotated[list[str], typer.Option(help="Scope to grant (repeatable).")],
    name: Annotated[str, typer.Option(help="What this client is.")] = "integration",
) -> None:
    """Create a system client; prints its credentials once, as JSON."""
    from jaejin.accounts.service import create_client
    from jaejin.directory.store import Institution

    with session_scope() as db:
        found = db.execute(select(Institution).where(Institution.code == institution)
                           ).scalar_one_or_none()
        if found is None:
            typer.echo(f"no institution with code {institution!r}", err=True)
            raise typer.Exit(2)
        try:
            client, secret = create_client(db, found, name, scope)
        except Problem as problem:
            typer.echo(_problem_text(problem), err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps({"client_id": client.client_id, "client_secret": secret}))


@audit_app.command("verify")
def audit_verify() -> None:
    """Seal what is waiting, then recompute every hash chain; exit 1 if any entry was edited or
    deleted, or entries waited too long to be sealed (the sealer is not running)."""
    from jaejin.core.audit import seal_and_verify
    from jaejin.core.database import utcnow

    report = seal_and_verify(get_engine())
    waiting = report.unsealed
    if waiting.entries:
        waited = waiting.waited(utcnow()).total_seconds()
        typer.echo(f"{waiting.entries} entries were waiting to be sealed, the oldest for "
                   f"{waited:,.0f} s (written {waiting.oldest_at:%Y-%m-%d %H:%M:%S} UTC); "
                   "sealed now")
    if report.intact:
        typer.echo(f"audit chain intact: {report.entries_checked} entries verified in "
                   f"{report.chains_checked} chains")
        return
    # Plain lines, never wrapped: operators grep and forward this output.
    for problem in report.problems:
        typer.secho(f"{problem.where}: {problem.problem}", fg="red", err=True)
    typer.secho(f"audit chain BROKEN: {len(report.problems)} problems in "
                f"{report.entries_checked} entries", fg="red", err=True)
    raise typer.Exit(1)
