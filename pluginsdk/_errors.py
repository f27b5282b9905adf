"""The exception hierarchy, rooted at :class:`PluginError`.

Guest-safe: this module imports nothing but the standard library, because the
worker loop and the sandboxed runner raise some of these too.

Every error survives pickling with all its attributes (a host may hand them
to ``multiprocessing`` or ``concurrent.futures``): :meth:`PluginError.__reduce__`
rebuilds the instance without calling ``__init__``, whose keyword-only
signatures the default exception pickling cannot replay.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any


class PluginError(Exception):
    """Root of every error pluginsdk raises.

    Attributes:
        plugin: Name of the plugin concerned, or ``None`` when the error is
            not about a single plugin.
    """

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.plugin = plugin

    def __str__(self) -> str:
        if self.plugin is None:
            return self.message
        return f"plugin {self.plugin!r}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # ``args`` and every attribute, restored as they are: no __init__ replay.
        return (_rebuild, (type(self), self.args), self.__dict__.copy())


def _rebuild(cls: type[PluginError], args: tuple[Any, ...]) -> PluginError:
    """Unpickle a :class:`PluginError`: the instance, with ``args``; pickle then restores its attributes."""
    return cls.__new__(cls, *args)


def type_name(cls: type) -> str:
    """``module.Qualname`` of an exception class, for messages; never raises.

    Plugin code may define classes whose ``__module__`` is not a string or
    whose ``__qualname__`` is a property that raises: the error report must
    not fail on them.
    """
    qualname = _str_attr(cls, "__qualname__") or _str_attr(cls, "__name__") or "<unnamed class>"
    module = _str_attr(cls, "__module__")
    if module is None or module in ("builtins", "__main__"):
        return qualname
    return f"{module}.{qualname}"


def _str_attr(cls: type, name: str) -> str | None:
    try:
        value = getattr(cls, name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a note saying that it failed (and how); never raises."""
    try:
        return str(exc)
    except Exception as failure:
        try:
            why = f"{type_name(type(failure))}: {failure}"
        except Exception:  # the failure's own str() failed too
            why = type_name(type(failure))
        return f"<str() of {type_name(type(exc))} failed: {why}>"


def exit_text(returncode: int, stderr_tail: Iterable[str] = ()) -> str:
    """How a process ended, for error messages: its exit code or signal, and its last stderr lines."""
    if returncode < 0:
        import signal

        try:
            how = f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exit code {returncode}"
    tail = " | ".join(stderr_tail)
    return f"{how}; stderr: {tail}" if tail else how


def format_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc``; frames only if formatting it fails; never raises."""
    try:
        import traceback  # only when there is an error to report (and it may fail: out of descriptors)

        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # no traceback module, or a class that resists it: keep the frames
        lines = ["Traceback (most recent call last):\n"]
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
            tb = tb.tb_next
        return "".join(lines) + f"{type_name(type(exc))}: {exception_text(exc)}\n"


class SpecError(PluginError):
    """A host's hook specification is malformed (raised at host start)."""


class ConfigError(PluginError):
    """A policy or configuration file is malformed.

    Attributes:
        path: The file concerned, if any.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ManifestError(PluginError):
    """A plugin's ``pluginsdk.toml`` is missing or malformed.

    Attributes:
        path: The manifest file, when one was found.
        problems: One line per problem found.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str | None = None,
        path: str | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message, plugin=plugin)
        self.path = path
        self.problems = tuple(problems)


class IncompatiblePlugin(PluginError):
    """A plugin's manifest does not match the host's spec (name or version)."""


class UnknownPlugin(PluginError, KeyError):
    """The host has no plugin of that name (also a ``KeyError``, as a lookup miss).

    Attributes:
        plugin: The name asked for.
        known: The names of the plugins the host has, sorted.
    """

    #: Names listed in the message at most; the rest are counted.
    LISTED = 20

    def __init__(self, plugin: str, known: Sequence[str] = ()) -> None:
        known = tuple(sorted(known))
        if not known:
            message = "no such plugin; the host found no plugins at all"
        else:
            listed = ", ".join(known[: self.LISTED])
            if len(known) > self.LISTED:
                listed += f" and {len(known) - self.LISTED} more"
            message = f"no such plugin; the host has: {listed}"
            close = _close_matches(plugin, known)
            if close:
                message += f" (did you mean {' or '.join(repr(n) for n in close)}?)"
        super().__init__(message, plugin=plugin)
        self.known = known


def _close_matches(name: object, known: Sequence[str]) -> list[str]:
    if not isinstance(name, str):  # a lookup with a non-string key
        return []
    import difflib  # only on this error's path

    return difflib.get_close_matches(name, known, n=3)


class PluginLoadError(PluginError):
    """A plugin could not be imported or validated.

    Attributes:
        traceback: The formatted traceback of the underlying error, if any.
    """

    def __init__(self, message: str, *, plugin: str | None = None, traceback: str = "") -> None:
        super().__init__(message, plugin=plugin)
        self.traceback = traceback


class BackendUnavailable(PluginLoadError):
    """The isolation level a plugin needs cannot be provided here."""


class PluginHookError(PluginError):
    """A plugin's hook implementation raised.

    The same class is raised whatever the isolation level, so host code
    handles plugin failures one way.  In-process, the original exception is
    also chained as ``__cause__``; across a process or sandbox boundary only
    its description travels (nothing is unpickled).

    Attributes:
        hook: Name of the hook that was called.
        exc_type: Qualified name of the plugin's exception type.
        exc_message: ``str()`` of the plugin's exception.
        traceback: Formatted traceback text from where it was raised.
        index: In a batch (``map``), the position of the item that raised.
    """

    def __init__(
        self,
        *,
        plugin: str,
        hook: str,
        exc_type: str,
        exc_message: str,
        traceback: str = "",
        index: int | None = None,
    ) -> None:
        where = f" (batch item {index})" if index is not None else ""
        super().__init__(f"hook {hook!r} raised {exc_type}{where}: {exc_message}", plugin=plugin)
        self.hook = hook
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback
        self.index = index


class HookCallError(PluginError, TypeError):
    """A hook was called with the wrong arguments (also a ``TypeError``, as a bad call is).

    Raised before any plugin runs, whatever the isolation level: every call
    passes exactly the spec's arguments (pluggy would only warn about a
    missing one, and ignore an unknown one).

    Attributes:
        hook: The hook called.
        argnames: The spec's arguments, in order.
        missing: The spec's arguments the call lacked.
        unexpected: Arguments the call passed that the spec does not have.
        index: In a batch (``map``), the position of the item concerned.
    """

    def __init__(
        self,
        *,
        hook: str,
        argnames: Sequence[str],
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        index: int | None = None,
    ) -> None:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(map(repr, missing))}")
        if unexpected:
            problems.append(f"unexpected {', '.join(map(repr, unexpected))}")
        where = f" (batch item {index})" if index is not None else ""
        expected = ", ".join(argnames) or "no arguments"
        super().__init__(
            f"hook {hook!r} called with wrong arguments{where}: {'; '.join(problems) or 'mismatch'}"
            f" (the spec's arguments: {expected})"
        )
        self.hook = hook
        self.argnames = tuple(argnames)
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.index = index


class CodecError(PluginError):
    """A value could not be encoded or decoded at a boundary.

    Attributes:
        hook: The hook being called, when known.
        argument: The argument (or ``"return value"``) concerned, when known.
        index: In a batch, the position of the item concerned, when known.
        path: Where inside the argument or return value the part to blame is
            (``"[2]['when']"``); empty when it is the value itself or unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str | None = None,
        hook: str | None = None,
        argument: str | None = None,
        index: int | None = None,
        path: str = "",
    ) -> None:
        location = ""
        if argument:  # "return value[2]['when']", "argument 'doc'['items'][0]"
            location = (argument if argument == "return value" else f"argument {argument!r}") + path
        if index is not None:
            location += f" (batch item {index})"
        where = ", ".join(part for part in (f"hook {hook!r}" if hook else "", location.strip()) if part)
        super().__init__(f"{where}: {message}" if where else message, plugin=plugin)
        self.hook = hook
        self.argument = argument
        self.index = index
        self.path = path


class PluginCrashed(PluginError):
    """The worker or sandbox instance running a plugin died during a call.

    Attributes:
        detail: How it died (exit code, signal, trap message).
    """

    def __init__(self, message: str, *, plugin: str | None = None, detail: str = "") -> None:
        super().__init__(message, plugin=plugin)
        self.detail = detail


class PluginTimeout(PluginError):
    """A call ran past its deadline; the worker or instance was replaced.

    Attributes:
        timeout: The deadline in seconds.
    """

    def __init__(self, message: str, *, plugin: str | None = None, timeout: float = 0.0) -> None:
        super().__init__(message, plugin=plugin)
        self.timeout = timeout


class PluginResourceError(PluginError):
    """A plugin exceeded a resource limit (memory, message size).

    Attributes:
        index: In a batch, the position of the item concerned, when known.
    """

    def __init__(self, message: str, *, plugin: str | None = None, index: int | None = None) -> None:
        super().__init__(message, plugin=plugin)
        self.index = index


class PluginProtocolError(PluginError):
    """A worker or sandbox instance sent something the protocol does not allow; it was replaced.

    A plugin that writes to its reply channel, answers twice or forges a
    frame gets this, never another caller's result.

    Attributes:
        hook: The hook being called when it happened.
        detail: What was wrong with what arrived.
    """

    def __init__(self, message: str, *, plugin: str | None = None, hook: str | None = None, detail: str = "") -> None:
        super().__init__(message, plugin=plugin)
        self.hook = hook
        self.detail = detail
