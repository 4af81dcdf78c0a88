"""A pytest plugin for the reliability table (docs/reliability.md): the fault and
hostile-input tests record a row each through the `record` fixture, pytest prints the
table at the end of a run, and

    python -m pytest --reliability-table docs/reliability.md

writes it into that file, between its begin and end markers, so the table in the docs
is always the one the tests last produced."""

from __future__ import annotations

from pathlib import Path

import pytest

BEGIN, END = "<!-- begin reliability table -->", "<!-- end reliability table -->"
HEADER = [
    "| fault or hostile input | tries | server alive after | outcome |",
    "| --- | --- | --- | --- |",
]
ROWS: list[tuple[str, int, str]] = []  # (case, tries, outcome), in the order the tests ran


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-table",
        metavar="FILE",
        help="write the reliability table into FILE, between its begin and end markers",
    )


@pytest.fixture(scope="session")
def record():
    """record(case, tries, outcome): one row of the reliability table. Only tests whose
    server stayed up and served the next client record one."""

    def add(case: str, tries: int, outcome: str) -> None:
        ROWS.append((case, tries, outcome))

    return add


def table() -> list[str]:
    return HEADER + [f"| {case} | {tries} | yes | {outcome} |" for case, tries, outcome in ROWS]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if not ROWS:
        return
    terminalreporter.section("reliability and security")
    for line in table():
        terminalreporter.write_line(line)
    if target := config.getoption("--reliability-table"):
        path = Path(target)
        text = path.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        if not tail and END not in rest:
            terminalreporter.write_line(f"{path}: no {BEGIN} ... {END} markers; not written")
            return
        path.write_text("\n".join([head + BEGIN, *table(), END]) + tail)
        terminalreporter.write_line(f"reliability table written to {path}")
