"""`jaejin policy ...`: judge a proposed visit from a JSON file, list the rule packs.

Exit codes: 0 whatever the decision; 2 on bad input (the message names the field); 1 when the
packs themselves are malformed.
"""

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from jaejin.policy.engine import evaluate_json
from jaejin.policy.errors import PackError, RequestError
from jaejin.policy.packs import (
    DEFAULT_DATA_DIRECTORY,
    DEFAULT_PACK_DIRECTORY,
    CountryPack,
    Pack,
    PackRegistry,
    default_registry,
    load_packs,
)
from jaejin.policy.request import describe_validation_error

BAD_INPUT = 2
BAD_PACKS = 1

policy_cli = typer.Typer(
    name="policy",
    help="Telemedicine rules: judge a proposed visit, list the rule packs in force.",
    no_args_is_help=True,
    add_completion=False,
)

PacksOption = Annotated[
    Path | None,
    typer.Option(
        "--packs", help="Directory of pack files (default: the packs shipped with Jaejin)."
    ),
]


def _fail(code: int, lines: list[str]) -> NoReturn:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _registry(packs: Path | None) -> PackRegistry:
    try:
        if packs is None:
            return default_registry()
        return load_packs(packs, DEFAULT_DATA_DIRECTORY)
    except PackError as error:
        _fail(BAD_PACKS, [str(error)])


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _provisional_count(pack: Pack) -> int:
    parameters = [getattr(pack.parameters, name) for name in type(pack.parameters).model_fields]
    count: int = sum(bool(parameter.provisional) for parameter in parameters if parameter)
    if isinstance(pack, CountryPack):
        count += sum(row.provisional for row in pack.emergency)
    return count


@policy_cli.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Request JSON file; - reads standard input.")],
    packs: PacksOption = None,
) -> None:
    """Judge the proposed visit in FILE and print the decision as JSON."""
    registry = _registry(packs)
    try:
        raw = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as error:
        _fail(BAD_INPUT, [f"{file}: cannot read ({error.strerror})"])
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        _fail(BAD_INPUT, [f"{file}: not valid JSON: {error}"])
    try:
        response = evaluate_json(data, registry)
    except ValidationError as error:
        _fail(
            BAD_INPUT,
            [
                f"{problem['field']}: {problem['message']}"
                for problem in describe_validation_error(error)
            ],
        )
    except RequestError as error:
        _fail(BAD_INPUT, [str(error)])
    _print_json(response)


@policy_cli.command("packs")
def list_packs(
    packs: PacksOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every pack with its parameters as JSON.")
    ] = False,
) -> None:
    """List the rule packs with their in-force dates (validates them on the way)."""
    registry = _registry(packs)
    if as_json:
        _print_json(registry.describe())
        return
    table = Table(title=f"Policy packs ({packs or DEFAULT_PACK_DIRECTORY})")
    for column in ("id", "kind", "in force (KST)", "title", "provisional"):
        table.add_column(column)
    for pack in sorted(registry.packs, key=lambda pack: (pack.kind, pack.in_force.starts, pack.id)):
        provisional = _provisional_count(pack)
        table.add_row(
            pack.id,
            pack.kind,
            pack.in_force.describe(),
            pack.title.en,
            f"{provisional} parameter(s)" if provisional else "-",
        )
    Console().print(table)
