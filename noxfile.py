"""Sessions for pluginsdk: tests, lint, typecheck, bench, demo."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)


def _pyenv_path() -> str:
    """PATH with every pyenv-installed Python's bin dir, so nox finds python3.X."""
    versions = Path.home() / ".pyenv" / "versions"
    dirs = sorted(str(p / "bin") for p in versions.glob("3.*")) if versions.is_dir() else []
    return os.pathsep.join([*dirs, os.environ.get("PATH", "")])


os.environ["PATH"] = _pyenv_path()


def _install(session: nox.Session, *groups: str, extras: str = "wasm") -> None:
    session.install("-e", f".[{extras}]" if extras else ".")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on the default Python."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(name="tests-all", python=PYTHONS, default=False)
def tests_all(session: nox.Session) -> None:
    """Run the test suite on each supported Python (pyenv's are put on PATH; missing ones are skipped)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common mistakes with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "pluginsdk", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "pluginsdk")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy (strict, at the oldest supported Python)."""
    _install(session, "typecheck")
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark side by side, then write benchmarks/REPORT.md and its chart."""
    _install(session, "bench", "test")
    for old in (ROOT / "benchmarks" / "results").glob("*.json"):
        old.unlink()  # the report shows this run only; a benchmark that fails is listed as not run
    failed = []
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        try:
            session.run("python", str(script), *session.posargs)
        except nox.command.CommandFailed:
            failed.append(script.name)
    session.run("python", str(ROOT / "benchmarks" / "report.py"))
    if failed:
        session.error(f"failed: {', '.join(failed)} (listed as not run in benchmarks/REPORT.md)")


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job: the leakscan reference host running its plugins at every isolation level."""
    _install(session)
    plugins = ("leakscan", "leakscan-secrets", "leakscan-pii", "leakscan-entropy", "leakscan-legacy")
    session.install(*(f"./reference-plugins/{name}" for name in plugins))
    session.run("python", "reference-plugins/demo/run_demo.py", *session.posargs)
