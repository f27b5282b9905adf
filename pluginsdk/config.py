"""The SDK's configuration vocabulary: isolation levels, statuses, limits, backend options.

A leaf module (standard library and ``._errors`` only) that every part may
import: discovery, manifests, policy, the host and the backends speak of
limits and levels in these terms, and the defaults live here and nowhere
else.

Value classes are named tuples: importing attrs or generating a dataclass's
methods costs about a millisecond each on the host's start-up path.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from ._errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from ._options import BackendOptions as BackendOptions

__all__ = [
    "AVAILABLE",
    "DEFAULT_LIMITS",
    "DISABLED",
    "FAILED",
    "INCOMPATIBLE",
    "ISOLATION_LEVELS",
    "LIMIT_RULES",
    "LOADED",
    "STATUSES",
    "UNAVAILABLE",
    "BackendOptions",
    "Incident",
    "Isolation",
    "Limits",
    "PluginStatus",
]

#: An isolation level.
Isolation = Literal["inprocess", "process", "wasm"]

#: Isolation levels, weakest first.  Policy may raise a plugin's level, never lower it.
ISOLATION_LEVELS: tuple[Isolation, ...] = ("inprocess", "process", "wasm")

#: Where a plugin stands, in ``Candidate.status`` (the first three) and ``PluginInfo.status``.
PluginStatus = Literal["available", "incompatible", "failed", "loaded", "disabled", "unavailable"]
AVAILABLE: PluginStatus = "available"  # found, not loaded yet
INCOMPATIBLE: PluginStatus = "incompatible"  # written for another spec or spec version
FAILED: PluginStatus = "failed"  # broken metadata, a name claimed twice, an import error...
LOADED: PluginStatus = "loaded"
DISABLED: PluginStatus = "disabled"  # kept out by the host's policy
UNAVAILABLE: PluginStatus = "unavailable"  # its isolation level cannot run here
STATUSES: tuple[PluginStatus, ...] = (AVAILABLE, INCOMPATIBLE, FAILED, LOADED, DISABLED, UNAVAILABLE)


# field -> (whole number?, smallest allowed, what is allowed in words).  Caps
# must be positive: to a backend, 0 would mean "no cap".  Only recycle_after
# and idle_timeout take 0, meaning "never".  Every number must be finite, and a
# bool is not a number here (TOML ``true`` must not read as 1).
LIMIT_RULES: dict[str, tuple[bool, float, str]] = {
    "workers": (True, 1, "a whole number > 0"),
    "timeout": (False, 0, "a finite number > 0"),
    "memory_mb": (True, 1, "a whole number > 0"),
    "max_message_mb": (False, 0, "a finite number > 0"),
    "recycle_after": (True, 0, "a whole number >= 0 (0: never)"),
    "idle_timeout": (False, 0, "a finite number >= 0 (0: never)"),
    "open_files": (True, 1, "a whole number > 0"),
}
_ZERO_OK = frozenset({"recycle_after", "idle_timeout"})


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut short: a hostile manifest's value must not become a huge message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def limit_problem(field: str, value: object, *, where: str = "limits") -> str | None:
    """What is wrong with ``value`` for limit ``field``, or ``None``: THE check of every limit.

    Manifests, policies (in code or from TOML) and backends all ask this, so
    they refuse the same values in the same words, e.g.
    ``limits.timeout: -5 is not allowed; expected a finite number > 0``.
    """
    rule = LIMIT_RULES.get(field)
    if rule is None:
        return f"{where}.{field}: unknown limit (expected {', '.join(LIMIT_RULES)})"
    if value is None:
        return None
    whole, least, allowed = rule
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = number == number and number not in (float("inf"), float("-inf"))
        ok = ok and (not whole or number.is_integer())
        ok = ok and (number >= least if field in _ZERO_OK else number > 0)
    if ok:
        return None
    return f"{where}.{field}: {_short(value)} is not allowed; expected {allowed}"


class Limits(NamedTuple):
    """Resource limits for one plugin; ``None`` means "use the default".

    Build checked limits with :meth:`checked`; the allowed range of each
    field is in :data:`LIMIT_RULES`.

    Attributes:
        workers: Worker processes (``process``) or warm instances (``wasm``).
        timeout: Seconds one call may run before the worker is replaced.
        memory_mb: Memory cap per worker or instance, in MiB.
        max_message_mb: Largest single message accepted from the plugin, in MiB.
        recycle_after: Replace a worker after this many calls (``0``: never).
        idle_timeout: Shut idle workers down after this many seconds (``0``: never).
        open_files: Files (and directories) one worker or instance may hold open
            at once; opening one more fails in the plugin with ``EMFILE``.
    """

    workers: int | None = None
    timeout: float | None = None
    memory_mb: int | None = None
    max_message_mb: float | None = None
    recycle_after: int | None = None
    idle_timeout: float | None = None
    open_files: int | None = None

    def merged(self, *fallbacks: Limits) -> Limits:
        """These limits, with each unset field taken from the first fallback that sets it."""
        values = self._asdict()
        for fb in fallbacks:
            for key, value in fb._asdict().items():
                if values[key] is None:
                    values[key] = value
        return Limits(**values)

    @staticmethod
    def problems(values: Limits | Mapping[str, object], *, where: str = "limits") -> list[str]:
        """Every problem of ``values`` (limits, or a mapping such as a TOML table), one line each."""
        items: Iterable[tuple[object, object]]
        if isinstance(values, Limits):
            items = values._asdict().items()
        elif hasattr(values, "items"):
            items = values.items()
        else:
            return [f"{where}: expected a table of limits, got {_short(values)}"]
        return [p for k, v in items if (p := limit_problem(str(k), v, where=where)) is not None]

    @classmethod
    def checked(cls, values: Limits | Mapping[str, object] | None = None, *, where: str = "limits") -> Limits:
        """``values`` as valid :class:`Limits` (whole numbers as ``int``, the rest as ``float``).

        Raises :class:`~pluginsdk.ConfigError` listing every problem, each
        naming the field, the value and what is allowed.
        """
        if values is None:
            return cls()
        problems = cls.problems(values, where=where)
        if problems:
            raise ConfigError("invalid limits: " + "; ".join(problems))
        items: dict[str, Any] = values._asdict() if isinstance(values, Limits) else dict(values)
        typed: dict[str, Any] = {
            k: None if v is None else (int(v) if LIMIT_RULES[k][0] else float(v)) for k, v in items.items()
        }
        return cls(**typed)


#: What a backend uses when neither the host nor the plugin says otherwise;
#: also the caps on manifest hints when the host's policy sets none.
DEFAULT_LIMITS = Limits(
    workers=1,
    timeout=30.0,
    memory_mb=1024,
    max_message_mb=64.0,
    recycle_after=0,
    idle_timeout=0.0,
    open_files=256,
)


class Incident(NamedTuple):
    """Something that went wrong in a loaded plugin and that the backend recovered from.

    Attributes:
        kind: ``crashed``, ``timeout``, ``resource`` (a cap was hit) or
            ``replaced`` (a worker was replaced for garbling its channel).
        hook: The hook being called when it happened, if any.
        detail: What happened, in words (the error's message).
        time: When it happened (``time.time()``).
    """

    kind: str
    hook: str | None
    detail: str
    time: float


def __getattr__(name: str) -> Any:
    # BackendOptions is only needed once a backend starts: building a named tuple
    # class costs a quarter of a millisecond that a host start need not pay.
    if name == "BackendOptions":
        from ._options import BackendOptions

        globals()[name] = BackendOptions
        return BackendOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
