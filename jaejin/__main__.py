"""`python -m jaejin`: the `jaejin` command, for where its script is not on the PATH (the
benchmarks start `python -m jaejin serve` with the interpreter they run under)."""

from jaejin.cli import app

app()
