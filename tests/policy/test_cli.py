"""`jaejin policy check FILE` and `jaejin policy packs` (mounted under the main CLI later)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from jaejin.policy import default_registry, evaluate_json
from jaejin.policy.cli import policy_cli
from jaejin.policy.packs import DEFAULT_PACK_DIRECTORY
from tests.policy.builders import EXAMPLE, build

runner = CliRunner()


def _write(tmp_path: Path, data: object, name: str = "visit.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_check_prints_the_same_json_as_the_engine(tmp_path: Path) -> None:
    result = runner.invoke(policy_cli, ["check", str(_write(tmp_path, EXAMPLE))])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == evaluate_json(EXAMPLE, default_registry())
    assert json.loads(result.stdout)["decision"] == "allowed"


def test_check_exits_zero_on_a_denial(tmp_path: Path) -> None:
    denied = build({"institution.telemedicine_share": 0.9})
    result = runner.invoke(policy_cli, ["check", str(_write(tmp_path, denied))])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["decision"] == "denied"


def test_check_reads_standard_input() -> None:
    result = runner.invoke(policy_cli, ["check", "-"], input=json.dumps(EXAMPLE))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["pack"] == "kr-msa-2026"


def test_bad_input_exits_two_naming_the_field(tmp_path: Path) -> None:
    bad = build({"patient.flags": ["vip"]})
    result = runner.invoke(policy_cli, ["check", str(_write(tmp_path, bad))])
    assert result.exit_code == 2
    assert "patient.flags.0" in result.stderr
    assert result.stdout == ""


def test_a_contradiction_with_the_reference_data_exits_two(tmp_path: Path) -> None:
    bad = build({"history": [], "patient.flags": ["emergency_shortage_area"],
                 "patient.residence_district": {"province": "KR-11", "district": "종로구"}})
    result = runner.invoke(policy_cli, ["check", str(_write(tmp_path, bad))])
    assert result.exit_code == 2
    assert "patient.flags" in result.stderr


def test_invalid_json_and_missing_files_exit_two(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{\"at\": ", encoding="utf-8")
    assert runner.invoke(policy_cli, ["check", str(broken)]).exit_code == 2
    missing = runner.invoke(policy_cli, ["check", str(tmp_path / "missing.json")])
    assert missing.exit_code == 2
    assert "cannot read" in missing.stderr


def test_packs_lists_every_pack_as_json() -> None:
    result = runner.invoke(policy_cli, ["packs", "--json"])
    assert result.exit_code == 0
    ids = {pack["id"] for pack in json.loads(result.stdout)}
    assert {"kr-pilot-2023-06", "kr-msa-2026", "kr-overseas-2016", "country-fallback"} <= ids


def test_packs_prints_a_table() -> None:
    result = runner.invoke(policy_cli, ["packs"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "kr-pilot-2024-12" in result.stdout


def test_a_malformed_pack_stops_the_command_with_exit_one(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(DEFAULT_PACK_DIRECTORY, packs)
    (packs / "country-jp.toml").write_text("id = ", encoding="utf-8")
    result = runner.invoke(policy_cli, ["packs", "--packs", str(packs)])
    assert result.exit_code == 1
    assert "country-jp.toml: not valid TOML" in result.stderr
