"""The exception hierarchy, rooted at :class:`PluginError`.

Guest-safe: this module imports nothing but the standard library, because the
worker loop and the sandboxed runner raise some of these too.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


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


class CodecError(PluginError):
    """A value could not be encoded or decoded at a boundary.

    Attributes:
        hook: The hook being called, when known.
        argument: The argument (or ``"return value"``) concerned, when known.
        index: In a batch, the position of the item concerned, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str | None = None,
        hook: str | None = None,
        argument: str | None = None,
        index: int | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                f"hook {hook!r}" if hook else "",
                f"argument {argument!r}" if argument else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message, plugin=plugin)
        self.hook = hook
        self.argument = argument
        self.index = index


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
