"""`jaejin monitoring evaluate`: a reproducible report on a simulated cohort, through the real
`jaejin` command group."""

from __future__ import annotations

from typer.testing import CliRunner

from jaejin.cli import app as jaejin_app
from jaejin.monitoring.evaluation import run_evaluation

runner = CliRunner()
SMALL_COHORT = ["--patients", "12", "--days", "21", "--seed", "3"]


def _without_timing(text: str) -> list[str]:
    # The second line reports how long the run took; everything else is deterministic.
    lines = text.splitlines()
    return [lines[0], *lines[2:]]


def test_it_prints_the_evaluation_report_of_the_requested_cohort() -> None:
    result = runner.invoke(jaejin_app, ["monitoring", "evaluate", *SMALL_COHORT])
    assert result.exit_code == 0, result.output
    expected = run_evaluation(patients=12, days=21, seed=3).to_text("en")
    assert _without_timing(result.stdout) == _without_timing(expected)
    assert "12 simulated patients, 21 days, seed 3" in result.stdout
    assert "naive" in result.stdout.lower()


def test_the_same_seed_gives_the_same_report() -> None:
    first = runner.invoke(jaejin_app, ["monitoring", "evaluate", *SMALL_COHORT])
    second = runner.invoke(jaejin_app, ["monitoring", "evaluate", *SMALL_COHORT])
    assert first.exit_code == second.exit_code == 0
    assert _without_timing(first.stdout) == _without_timing(second.stdout)


def test_it_reports_in_korean_when_asked() -> None:
    result = runner.invoke(jaejin_app, ["monitoring", "evaluate", *SMALL_COHORT, "--lang", "ko"])
    assert result.exit_code == 0, result.output
    assert "가상 환자 12명" in result.stdout


def test_it_refuses_an_unknown_language_without_running() -> None:
    result = runner.invoke(jaejin_app, ["monitoring", "evaluate", "--lang", "klingon"])
    assert result.exit_code == 2
    assert "unknown language" in result.output


def test_it_refuses_an_empty_cohort() -> None:
    result = runner.invoke(jaejin_app, ["monitoring", "evaluate", "--patients", "0"])
    assert result.exit_code == 2
