"""Sessions for pluginsdk: tests, lint, typecheck, docs, bench, demo.

Nothing here runs at import beyond reading pyproject.toml and looking for
interpreters (``nox -l`` stays cheap and changes nothing, PATH included).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)


def _install(session: nox.Session, *groups: str, extras: str = "wasm,envs") -> None:
    session.install("-e", f".[{extras}]" if extras else ".")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


def _find_python(version: str) -> tuple[str | None, str]:
    """``python{version}``'s path (``None`` if there is none), and where it was looked for.

    PATH first, skipping pyenv's shims (they fail for any version pyenv has not
    selected), then the newest pyenv install of that version under
    ``$PYENV_ROOT`` (default ``~/.pyenv``), read where it is: PATH is not changed.
    """
    exe = f"python{version}"
    on_path = shutil.which(exe)
    if on_path and Path(on_path).parent.name != "shims":
        return on_path, "PATH"
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    release = re.compile(rf"{re.escape(version)}\.(\d+)")  # 3.13.1, not 3.13-dev or 3.13.1t
    found = ((release.fullmatch(p.name), p) for p in (root / "versions").glob(f"{version}.*"))
    patches = [(int(m.group(1)), p) for m, p in found if m]
    for _, install in sorted(patches, reverse=True):
        if os.access(install / "bin" / exe, os.X_OK):
            return str(install / "bin" / exe), str(install)
    return None, f"PATH (pyenv shims skipped) and {root / 'versions' / (version + '.*')}"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on the default Python (with Ray: its tests run here only, on one local cluster)."""
    _install(session, "test", extras="wasm,envs,ray")
    session.run("pytest", *session.posargs)


def _tests_on(version: str, python: str | None, where: str) -> Callable[[nox.Session], None]:
    def run(session: nox.Session) -> None:
        if python is None:
            message = f"Python {version} not found: looked in {where}"
            # CI must not pass because an interpreter is missing; a developer's machine may lack some.
            if os.environ.get("CI"):
                session.error(message)
            session.skip(message)
        session.log(f"Python {version}: {python} (from {where})")
        _install(session, "test")
        # Suites that build or start something big once per session (a component per plugin, a Ray
        # cluster) run in the `tests` session only: they test the SDK, not the interpreter's version.
        session.run("pytest", "-m", "not once", *session.posargs)

    run.__doc__ = f"Run the test suite on Python {version} (from PATH or pyenv; skipped, or an error on CI, if absent)."
    return run


for _version in PYTHONS:
    _python, _where = _find_python(_version)
    # The interpreter's path, not its version: nox would search PATH only (older nox) for "3.13".
    nox.session(name=f"tests-all-{_version}", python=_python or False, default=False)(
        _tests_on(_version, _python, _where)
    )


@nox.session(name="tests-all", python=False, default=False)
def tests_all(session: nox.Session) -> None:
    """Run the test suite on each supported Python that is installed (the tests-all-3.X sessions)."""
    for version in PYTHONS:
        session.notify(f"tests-all-{version}")


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common mistakes with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "pluginsdk", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "pluginsdk")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check (mypy, strict, at the oldest supported Python) the SDK, the reference plugins and a baked plugin.

    Typed hook calls are checked by mypy and pyright both, on tests/typing/sample_host.py.
    """
    _install(session, "typecheck", extras="wasm,envs,otel")
    session.install("cookiecutter>=2.6")
    session.run("mypy")
    # What a plugin author's and a host author's checkers see of the public surface (hookimpl keeps the
    # function's type; host.hook.NAME knows its hook): mypy and pyright, each against the sample's expectations.
    # PLUGINSDK_TYPECHECK=1: a checker missing here fails those tests rather than skipping them.
    session.run("pytest", "-q", "tests/test_typing_surface.py", env={"PLUGINSDK_TYPECHECK": "1"})
    # The reference host and plugins: their sources only (their tests use the untyped pytest kit fixtures).
    # Errors in what they import but is not listed here (pluginsdk, checked above) are not repeated.
    sources = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("reference-plugins/*/src/**/*.py") if p.is_file())
    session.run("mypy", "--follow-imports=silent", *sources)
    # What the template makes, for leakscan and for another spec, code and tests alike.
    out = Path(session.create_tmp()) / "baked"
    shutil.rmtree(out, ignore_errors=True)
    generic = ["spec_name=textkit", "plugin_name=echo", "hook_name=transform", "hook_args=text", "host_dist=textkit"]
    bakes = {"leakscan-keywords": [], "textkit-echo": [*generic, "host_requirement=textkit", "isolation=process"]}
    for slug, answers in bakes.items():
        template = str(ROOT / "cookiecutter-template")
        session.run("cookiecutter", "--no-input", "-o", str(out), template, *answers, silent=True)
        with session.chdir(out / slug):
            session.run("mypy", "--strict", "--python-version", "3.10", "src", "tests", env={"MYPYPATH": "src"})


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (MkDocs, strict: a broken link or reference fails) into a temporary folder.

    ``nox -s docs -- serve`` serves it at http://127.0.0.1:8000 instead, rebuilt on every edit.
    """
    _install(session, "docs", extras="")
    quiet = {"NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2, on every run
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", *session.posargs[1:], env=quiet)
        return
    site = Path(session.create_tmp()) / "site"
    session.run("mkdocs", "build", "--strict", "--clean", "--site-dir", str(site), env=quiet)
    session.log(f"site written to {site}")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark side by side, then write benchmarks/REPORT.md and its chart."""
    _install(session, "bench", "test", extras="wasm,envs,ray")
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
    """The main job: the leakscan reference host running its plugins at every isolation level.

    Everything of this project comes from this checkout, by path: the SDK (distribution
    pluginsdk-isolated), the host (pluginsdk-leakscan) and the plugins.
    """
    _install(session)
    plugins = ("leakscan", "leakscan-secrets", "leakscan-pii", "leakscan-entropy", "leakscan-legacy", "leakscan-rogue")
    session.install(*(f"./reference-plugins/{name}" for name in plugins))
    session.run("python", "reference-plugins/demo/run_demo.py", *session.posargs)
