"""The pytest side of the kit: options, and one test item per check of every configured plugin."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from trellis.testing.registry import Check, checks_for
from trellis.testing.subject import (
    DEFAULT_IMPORT_BUDGET_S,
    ConformanceFailure,
    ConformanceSkip,
    Subject,
    Target,
    unexpected_errors_fail,
)

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trellis", "Trellis plugin conformance kit")
    group.addoption(
        "--trellis-plugin",
        action="append",
        default=[],
        metavar="ROLE:NAME",
        help="check an installed plugin against its role's contract, e.g. accelerator:acme (repeatable)",
    )
    group.addoption(
        "--trellis-import-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"most seconds importing a plugin's module may take (default {DEFAULT_IMPORT_BUDGET_S})",
    )
    parser.addini("trellis_plugins", type="linelist", help="plugins to check, one ROLE:NAME per line")
    parser.addini("trellis_import_budget", default=str(DEFAULT_IMPORT_BUDGET_S), help="see --trellis-import-budget")


def configured_targets(config: pytest.Config) -> list[Target]:
    """--trellis-plugin options, else the trellis_plugins ini lines; a malformed one is a usage error."""
    texts = config.getoption("trellis_plugin") or config.getini("trellis_plugins")
    try:
        return list(dict.fromkeys(Target.parse(text) for text in texts))
    except ValueError as error:
        raise pytest.UsageError(f"trellis conformance kit: {error}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    budget = config.getoption("trellis_import_budget") or float(config.getini("trellis_import_budget"))
    for target in configured_targets(config):
        subject = Subject(target, import_budget_s=budget)
        collector = ConformanceCollector.from_parent(
            session, name=f"trellis-conformance[{target}]", nodeid=f"trellis-conformance::{target}", subject=subject
        )
        items.extend(session.genitems(collector))


class ConformanceCollector(pytest.Collector):
    """The checks of one plugin."""

    def __init__(self, *, subject: Subject, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subject = subject

    def collect(self) -> Iterator[pytest.Item]:
        for check in checks_for(self.subject.role):
            yield ConformanceItem.from_parent(self, name=check.id, check=check, subject=self.subject)


class ConformanceItem(pytest.Item):
    """One check of one plugin; a failure reports the kit's message, which says what to fix."""

    def __init__(self, *, check: Check, subject: Subject, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check, self.subject = check, subject

    def runtest(self) -> None:
        run_check(self.check, self.subject)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, ConformanceFailure):
            return f"{self.subject.target} does not pass '{self.check.id}' ({self.check.summary}):\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.subject.target} {self.check.id}: {self.check.summary}"


def run_check(check: Check, subject: Subject) -> None:
    """Run one check in a fresh temporary directory; ConformanceSkip becomes a pytest skip."""
    with tempfile.TemporaryDirectory(prefix=f"trellis-{check.id}-") as directory:
        try:
            action = f"the '{check.id}' check of {subject.target}"
            unexpected_errors_fail(action, lambda: check.run(subject, Path(directory)))
        except ConformanceSkip as skip:
            pytest.skip(str(skip))
