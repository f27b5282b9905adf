"""OpenTelemetry reporting of plugin calls, through ``opentelemetry-api`` when it is installed.

``Host(otel=True)`` measures plugins with the :class:`Recorder` subclass made
here, which also reports every measured request to OpenTelemetry's global
providers (whatever SDK and exporters the application configured; without
an SDK the API's no-op providers drop it all):

* a span ``hook NAME`` per request, child of the span current in the
  caller, with the plugin, hook, isolation level, spec, item count and
  outcome as attributes, and an error status when it failed.  Spans are
  made once the request is over, with its start and end times, so nothing
  is added to the request's own path;
* the counters ``pluginsdk.plugin.requests`` (by outcome) and
  ``pluginsdk.plugin.items``, and the histograms ``pluginsdk.plugin.duration``
  (seconds a request took, crossing included) and ``pluginsdk.plugin.inside``
  (seconds the plugin reports spending in its own code).

Nothing here is imported unless a host asks for it: ``opentelemetry-api``
stays optional (the ``otel`` extra).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._errors import PluginCrashed, PluginError, PluginTimeout, type_name
from ._stats import EVERY_REQUEST, Recorder, clock

if TYPE_CHECKING:
    from ._stats import MetricsMode

__all__ = ["ATTRIBUTES", "recorder_class"]

#: The attributes every span and data point carries (``outcome`` on requests only).
ATTRIBUTES = (
    "pluginsdk.plugin",
    "pluginsdk.hook",
    "pluginsdk.isolation",
    "pluginsdk.spec",
    "pluginsdk.outcome",
)
INSTALL_HINT = "pip install 'pluginsdk-isolated[otel]'"


def outcome(error: BaseException | None) -> str:
    """``ok``, ``timeout``, ``crash`` or ``error``: the ``pluginsdk.outcome`` of a request."""
    if error is None:
        return "ok"
    if isinstance(error, PluginTimeout):
        return "timeout"
    if isinstance(error, PluginCrashed):
        return "crash"
    return "error"


def recorder_class(spec: str, *, metrics: MetricsMode) -> type[Recorder]:
    """A :class:`Recorder` class that also reports to OpenTelemetry, for a host of spec ``spec``.

    Raises ``ImportError`` (naming the extra) when ``opentelemetry-api`` is
    not installed, and ``ValueError`` when ``metrics`` measures nothing.
    """
    if metrics == "off":
        raise ValueError("Host(otel=True) reports the calls that metrics measure: not with metrics='off'")
    try:
        import opentelemetry.metrics as otel_metrics
        import opentelemetry.trace as trace
    except ImportError:
        raise ImportError(f"Host(otel=True) needs opentelemetry-api: {INSTALL_HINT}") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("pluginsdk-isolated")
    except PackageNotFoundError:  # run from a source tree
        ours = None
    tracer = trace.get_tracer("pluginsdk", ours)
    meter = otel_metrics.get_meter("pluginsdk", ours or "")
    requests = meter.create_counter(
        "pluginsdk.plugin.requests", unit="{request}", description="Requests to a plugin's hook, by outcome"
    )
    items_counter = meter.create_counter(
        "pluginsdk.plugin.items", unit="{item}", description="Items those requests carried (a batch's size)"
    )
    duration = meter.create_histogram(
        "pluginsdk.plugin.duration", unit="s", description="Time a request took, boundary crossing included"
    )
    inside_time = meter.create_histogram(
        "pluginsdk.plugin.inside", unit="s", description="Time a plugin reports spending in its own code, a request"
    )
    error_status = trace.Status(trace.StatusCode.ERROR)

    class OtelRecorder(Recorder):
        """A :class:`Recorder` that also reports each request to OpenTelemetry."""

        __slots__ = ()
        SCHEDULE = EVERY_REQUEST  # a span for every request: each one is timed

        def _attributes(self, hook: str) -> dict[str, Any]:
            return {
                "pluginsdk.plugin": self.plugin,
                "pluginsdk.hook": hook,
                "pluginsdk.isolation": self.isolation,
                "pluginsdk.spec": spec,
            }

        def _report(self, hook: str, start: int, items: int, error: BaseException | None) -> None:
            elapsed = clock() - start
            end = time.time_ns()
            attributes = self._attributes(hook)
            attributes["pluginsdk.outcome"] = outcome(error)
            requests.add(1, attributes)
            items_counter.add(items, attributes)
            duration.record(elapsed / 1e9, attributes)
            span = tracer.start_span(
                f"hook {hook}", attributes={**attributes, "pluginsdk.items": items}, start_time=end - elapsed
            )
            if error is not None:
                # The SDK's errors by their public name; what an in-process plugin raised by its own.
                kind = f"pluginsdk.{type(error).__name__}" if isinstance(error, PluginError) else type_name(type(error))
                span.set_attribute("error.type", kind)
                span.set_status(trace.Status(error_status.status_code, str(error)[:500]))
            span.end(end_time=end)

        def ok(self, hook: str, start: int, items: int = 1) -> None:
            Recorder.ok(self, hook, start, items)
            self._report(hook, start, items, None)

        def failed(self, hook: str, start: int, error: BaseException, items: int = 1) -> None:
            Recorder.failed(self, hook, start, error, items)
            self._report(hook, start, items, error)

        def inside(self, hook: str, ns: int, items: int = 1) -> None:
            Recorder.inside(self, hook, ns, items)
            inside_time.record(ns / 1e9, self._attributes(hook))

    return OtelRecorder
