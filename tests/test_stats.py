"""Per-plugin metrics: ``host.stats()``, the guest's own time, hostile timing values, OpenTelemetry.

Real installed plugins, a real Host, real worker processes and sandbox
instances; the histogram and the recorder are also checked on their own
(accuracy against exact percentiles, bounded memory, exact counts from many
threads, the sampling schedule).  Only 1 request in ``SAMPLE_EVERY`` is
timed: expected sample sizes come from ``SCHEDULE``, the one place that says
which.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pluginsdk import (
    HookStats,
    Host,
    Latency,
    Limits,
    PluginCrashed,
    PluginHookError,
    PluginProtocolError,
    PluginTimeout,
    Policy,
)
from pluginsdk._stats import (
    BUCKETS,
    CYCLE,
    INSIDE,
    INSIDE_EVERY,
    LATENCY,
    SAMPLE_EVERY,
    SCHEDULE,
    WRAP,
    Histogram,
    Recorder,
    bucket_bounds,
    bucket_of,
    check_mode,
)

from .plugin_env import wasm_unavailable
from .plugin_factory import install_plugin
from .procs import wait_until
from .textkit import SPEC

_WASM_REASON = wasm_unavailable()
WASM = pytest.param(
    "wasm", marks=pytest.mark.skipif(_WASM_REASON is not None, reason=f"wasm unavailable: {_WASM_REASON}")
)
ISOLATED = ["process", WASM]
TIMEOUT = 1.5

# Sleeps, raises, crashes, or lies about its own time on request.  The lie:
# the guest loop encodes every frame with loop._encode_frame (a module global,
# looked up on each call), so the plugin swaps in one that rewrites the time
# field of its OK replies, adding one where the host asked for none, or
# dropping it ("drop"): what a hostile guest can send.
PLUGIN = r"""
import os
import time

from pluginsdk import hookimpl
from pluginsdk.guest import loop

LIE = []
_real = loop._encode_frame


def _forge(msg, *args):
    if LIE and type(msg) is list and len(msg) in (3, 4) and msg[0] == 11:
        msg = [msg[0], msg[1], msg[2]] if LIE[0] == "drop" else [msg[0], msg[1], msg[2], LIE[0]]
    return _real(msg, *args)


loop._encode_frame = _forge


@hookimpl
def transform(text):
    command, _, arg = text.partition(":")
    LIE[:] = []
    if command == "sleep":
        time.sleep(float(arg))
    elif command == "raise":
        raise ValueError(arg)
    elif command == "crash":
        os._exit(70)
    elif command == "lie":
        LIE.append(eval(arg))  # a literal from the test
    elif command == "print":
        print("printed " + arg)
    return text.upper()
"""
STREAMING = """
from pluginsdk import hookimpl
import time


@hookimpl
def transform(text):
    return f"<{text}>"


@hookimpl
def detect_language(text):
    return "en"
"""


def install(site: Path, level: str, name: str = "timed") -> None:
    install_plugin(site, name, PLUGIN, isolation=level)


@contextlib.contextmanager
def hosted(site: Path, **kwargs: Any) -> Iterator[Host]:
    policy = Policy(limits=Limits(timeout=TIMEOUT, workers=1))
    with Host(SPEC, policy=policy, path=[str(site)], use_index=False, **kwargs) as host:
        yield host


def one(host: Host, plugin: str = "timed", hook: str = "transform") -> HookStats:
    (row,) = [s for s in host.stats(plugin) if s.hook == hook]
    return row


def timed(numbers: range | list[int], kind: int = LATENCY) -> int:
    """How many of these request numbers (0: a hook's first request) are timed: by the host, or inside."""
    return sum(bool(SCHEDULE[n % CYCLE] & kind) for n in numbers)


#: The first request whose plugin is asked for its own time (request 0 has its latency timed).
FIRST_INSIDE = SCHEDULE.index(INSIDE)
#: The first request timed in no way.
UNTIMED = SCHEDULE.index(0)


# -- the histogram and the recorder -------------------------------------------------


class TestHistogram:
    @given(st.integers(min_value=0, max_value=2**37 - 1))
    def test_every_value_falls_in_its_bucket(self, ns: int) -> None:
        """bucket_of and bucket_bounds agree, and the inlined index in Histogram.add is bucket_of's."""
        low, high = bucket_bounds(bucket_of(ns))
        assert low <= ns < high
        h = Histogram()
        h.add(ns)
        assert [bucket_of(ns)] == [i for i, n in enumerate(h.counts) if n]

    def test_bucket_width_bounds_the_error(self) -> None:
        """Every bucket above 16 ns is at most 1/8 of its lower bound wide: a midpoint is within 6.25%."""
        for index in range(16, BUCKETS):
            low, high = bucket_bounds(index)
            assert (high - low) / low <= 1 / 8
            assert bucket_of(low) == index and bucket_of(high - 1) == index

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_percentiles_are_close_to_exact(self, seed: int) -> None:
        """p50 and p99 of a long-tailed sample are within 7% of the exact figures; count/total/max exact."""
        rng = random.Random(seed)
        values = sorted(int(rng.lognormvariate(10, 1.5)) for _ in range(20_000))
        h = Histogram()
        for v in values:
            h.add(v)
        for fraction in (0.5, 0.99):
            exact = values[int(fraction * len(values)) - 1]
            assert abs(h.percentile(fraction) - exact) <= 0.07 * exact
        lat = h.latency()
        assert (len(values), sum(values) / 1e9, max(values) / 1e9) == (lat.samples, lat.total, lat.max)

    def test_memory_is_bounded(self) -> None:
        """A million values, huge ones included, keep the same fixed list of counters."""
        h = Histogram()
        for i in range(1_000_000):
            h.add((i * 7919) % 5_000_000)
        for huge in (2**37, 2**50, 2**63):
            h.add(huge)
        assert BUCKETS == len(h.counts)
        assert 1_000_003 == sum(h.counts) == h.count
        assert 2**63 == h.max  # the exact maximum, though it shares the last bucket
        assert h.percentile(1.0) == 2**63

    def test_weights_count_items(self) -> None:
        h = Histogram()
        h.add(1000, 5)
        h.add(3000)
        assert (6, 8000) == (h.count, h.total)
        assert abs(h.percentile(0.5) - 1000) <= 1000 / 16
        assert abs(h.percentile(0.99) - 3000) <= 3000 / 16

    def test_empty(self) -> None:
        assert Latency() == Histogram().latency()


class TestSampling:
    @pytest.mark.parametrize(("kind", "every"), [(LATENCY, SAMPLE_EVERY), (INSIDE, INSIDE_EVERY)])
    def test_one_request_in_every_block_is_timed(self, kind: int, every: int) -> None:
        """In each run of SAMPLE_EVERY requests, exactly one latency; of INSIDE_EVERY, one (other) inside time."""
        assert SCHEDULE[0] == LATENCY and CYCLE % every == 0 and len(SCHEDULE) == CYCLE
        assert {0, LATENCY, INSIDE} == set(SCHEDULE)  # never both: the guest's clock is not in a latency
        for block in range(CYCLE // every):
            assert 1 == timed(range(block * every, (block + 1) * every), kind)
        for k in (1, 3, 100):
            assert k == timed(range(every * k), kind)

    @pytest.mark.parametrize("period", [2, 3, 8, SAMPLE_EVERY])
    @pytest.mark.parametrize("kind", [LATENCY, INSIDE])
    def test_a_caller_cycling_through_inputs_has_them_all_timed(self, period: int, kind: int) -> None:
        """Not every N-th request: a caller cycling through `period` inputs has (nearly) each of them in the sample."""
        positions = {n % period for n in range(CYCLE) if SCHEDULE[n] & kind}
        assert set(range(period)) == positions if period < SAMPLE_EVERY else len(positions) > 12

    def test_the_recorder_times_by_the_schedule(self) -> None:
        rec = Recorder("p", "process", ["h"])
        assert list(SCHEDULE[: 3 * SAMPLE_EVERY]) == [rec.request("h") for _ in range(3 * SAMPLE_EVERY)]
        assert 3 * SAMPLE_EVERY == rec.snapshot()[0].calls


class TestRecorder:
    def test_counts_are_exact_from_many_threads(self) -> None:
        """8 threads make 5,000 requests each, as the host does (no lock but once a CYCLE): not one is lost."""
        rec = Recorder("p", "process", ["h"])
        barrier = threading.Barrier(8)
        calls = rec.calls

        def work() -> None:
            barrier.wait()
            for i in range(5_000):
                sampled = next(calls["h"], WRAP)  # what Host._call does: no lock, but once per CYCLE
                if sampled == WRAP:
                    sampled = rec.wrapped("h")
                start = 1 if sampled & LATENCY else 0
                if i % 10 == 0:
                    rec.failed("h", start, PluginTimeout("slow", plugin="p", timeout=1.0))
                    continue
                if i % 3:
                    rec.items("h", i % 3)  # a batch of 1 + i % 3 items
                if start:
                    rec.ok("h", start, items=1 + i % 3)
                if sampled & INSIDE:
                    rec.inside("h", 100, items=1 + i % 3)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        (row,) = rec.snapshot()
        assert 8 * 5_000 == row.calls
        assert 8 * sum(1 + (i % 3 if i % 10 else 0) for i in range(5_000)) == row.items
        assert (8 * 500, 8 * 500, 0) == (row.errors, row.timeouts, row.crashes)
        assert 0 < row.latency.samples < 8 * 5_000 * 3 // SAMPLE_EVERY
        assert 0 < row.inside.samples < 8 * 5_000 * 3 // SAMPLE_EVERY

    def test_outcomes_are_classified(self) -> None:
        rec = Recorder("p", "wasm", ["h"])
        for error in (
            PluginCrashed("died", plugin="p"),
            PluginTimeout("slow", plugin="p", timeout=1.0),
            PluginHookError(plugin="p", hook="h", exc_type="E", exc_message="m"),
        ):
            rec.request("h")
            rec.failed("h", 0, error)
        rec.items("h", 3)
        (row,) = rec.snapshot()
        assert (3, 6, 3, 1, 1) == (row.calls, row.items, row.errors, row.timeouts, row.crashes)
        assert (0, 0, None) == (row.latency.samples, row.inside.samples, row.crossing)

    def test_hooks_without_requests_are_left_out(self) -> None:
        rec = Recorder("p", "process", ["a", "b"])
        rec.request("b")
        rec.request("other")  # a hook it was not told of gets a counter of its own
        assert ["b", "other"] == [r.hook for r in rec.snapshot()]

    @pytest.mark.parametrize("bad", ["on", True, 1, None, "ISOLATED"])
    def test_metrics_mode_is_checked(self, bad: object) -> None:
        with pytest.raises(ValueError, match="metrics must be one of 'off', 'isolated', 'all'"):
            check_mode(bad)


# -- through a real host -------------------------------------------------------------


@pytest.mark.parametrize("level", ISOLATED)
class TestIsolatedPlugins:
    def test_calls_items_errors_and_latency(self, site: Path, level: str) -> None:
        """Calls, a batch's items and a raised error are counted exactly; a sample is timed each way."""
        install(site, level)
        n = INSIDE_EVERY
        with hosted(site) as host:
            for _ in range(n):
                assert ["OK"] == host.hook.transform(text="ok")
            assert [["A"], ["B"], ["C"]] == host.hook.transform.map([{"text": t} for t in "abc"])
            with pytest.raises(PluginHookError):
                host.hook.transform(text="raise:boom")
            row = one(host)
        assert ("timed", "transform", level) == (row.plugin, row.hook, row.isolation)
        assert (n + 2, n + 4, 1, 0, 0) == (row.calls, row.items, row.errors, row.timeouts, row.crashes)
        # requests 0..n-1 are calls, n the batch (3 items), n+1 failed (counted, not timed)
        assert 4 <= timed(range(n)) + 3 * timed([n]) == row.latency.samples
        assert 1 <= timed(range(n), INSIDE) + 3 * timed([n], INSIDE) == row.inside.samples
        assert 0 < row.inside.p50 < row.latency.p50  # a few µs in the plugin, tens crossing
        assert row.latency.p50 <= row.latency.p99 <= row.latency.max
        assert row.crossing is not None and row.crossing > 0

    def test_percentiles_from_the_sample(self, site: Path, level: str) -> None:
        """INSIDE_EVERY calls: INSIDE_EVERY / SAMPLE_EVERY latencies, one inside time; both say how long it slept."""
        install(site, level)
        with hosted(site) as host:
            for _ in range(INSIDE_EVERY):
                host.hook.transform(text="sleep:0.001")
            row = one(host)
        assert (INSIDE_EVERY, INSIDE_EVERY // SAMPLE_EVERY, 1) == (row.calls, row.latency.samples, row.inside.samples)
        for figures in (row.inside, row.latency):
            assert 0.001 <= figures.p50 * 1.07 and figures.p50 <= figures.p99 <= figures.max * 1.07

    def test_timeouts_and_crashes(self, site: Path, level: str) -> None:
        """Every failure is counted, timed request or not; failures are not timed."""
        install(site, level)
        with hosted(site) as host:
            assert ["OK"] == host.hook.transform(text="ok")  # request 0: its latency timed
            with pytest.raises(PluginTimeout):
                host.hook.transform(text="sleep:30")
            with pytest.raises(PluginCrashed):
                host.hook.transform(text="crash")
            row = one(host)
        assert (3, 2, 1, 1) == (row.calls, row.errors, row.timeouts, row.crashes)
        assert 1 == row.latency.samples and row.latency.max < TIMEOUT

    @pytest.mark.parametrize(
        ("lie", "counted"),
        [("-5", False), ("2**63 - 1", False), ("10**12", False), ("0", True)],
    )
    def test_a_wrong_whole_number_is_ignored(self, site: Path, level: str, lie: str, counted: bool) -> None:
        """A negative time, or one no deadline allows, is left out of the figures; the call still answers."""
        install(site, level)
        with hosted(site) as host:
            for _ in range(FIRST_INSIDE):
                assert ["OK"] == host.hook.transform(text="ok")
            assert [f"LIE:{lie.upper()}"] == host.hook.transform(text=f"lie:{lie}")  # asked for its time
            row = one(host)
            assert (FIRST_INSIDE + 1, 0, timed(range(FIRST_INSIDE))) == (row.calls, row.errors, row.latency.samples)
            assert int(counted) == row.inside.samples
            assert 0 <= row.inside.max <= TIMEOUT + 1
            assert 0 == host.plugin("timed").incident_count

    @pytest.mark.parametrize("lie", ["10**8", "'drop'"])
    def test_a_time_not_asked_for_or_left_out_is_ignored(self, site: Path, level: str, lie: str) -> None:
        """A time on a reply the host did not ask it of is dropped; an asked-for reply without one has no figure."""
        install(site, level)
        with hosted(site) as host:
            for n in range(FIRST_INSIDE + 1):
                text = f"lie:{lie}" if n in (UNTIMED, FIRST_INSIDE) else "ok"
                assert [text.upper()] == host.hook.transform(text=text)
            row = one(host)
            assert (FIRST_INSIDE + 1, 0) == (row.calls, row.errors)
            assert (1 if lie == "10**8" else 0) == row.inside.samples  # the asked-for lie only
            assert 0 == host.plugin("timed").incident_count

    @pytest.mark.parametrize("lie", ["1.5", "'12'", "True", "None", "[1]"])
    @pytest.mark.parametrize("asked", [True, False])
    def test_a_time_that_is_no_whole_number_breaks_the_protocol(
        self, site: Path, level: str, lie: str, asked: bool
    ) -> None:
        """A float, a string, a bool...: a protocol violation, asked for or not; the worker is replaced."""
        install(site, level)
        liar = FIRST_INSIDE if asked else UNTIMED
        with hosted(site) as host:
            for _ in range(liar):
                assert ["OK"] == host.hook.transform(text="ok")
            with pytest.raises(PluginProtocolError, match="whole nanoseconds"):
                host.hook.transform(text=f"lie:{lie}")
            assert ["OK"] == host.hook.transform(text="ok")
            row = one(host)
            assert (liar + 2, 1) == (row.calls, row.errors)
            ok = [n for n in range(liar + 2) if n != liar]
            assert (timed(ok), timed(ok, INSIDE)) == (row.latency.samples, row.inside.samples)
            assert ["protocol"] == [i.kind for i in host.plugin("timed").incidents]

    def test_output_lines_name_the_plugin(self, site: Path, level: str, caplog: pytest.LogCaptureFixture) -> None:
        """What a plugin prints is logged to pluginsdk.plugin.NAME, its message starting with [NAME]."""
        install(site, level)
        with caplog.at_level(logging.INFO, logger="pluginsdk.plugin.timed"), hosted(site) as host:
            host.hook.transform(text="print:hello")
            assert wait_until(lambda: any("printed hello" in r.getMessage() for r in caplog.records))
        (record,) = [r for r in caplog.records if "printed hello" in r.getMessage()]
        assert "[timed] printed hello" == record.getMessage()
        assert ("timed", "stdout", "pluginsdk.plugin.timed") == (record.plugin, record.plugin_stream, record.name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("level", ISOLATED)
def test_streams_report_the_time_to_produce_every_item(site: Path, level: str) -> None:
    """A streamed result: latency until its first items; the END frame carries the plugin's whole time."""
    from pluginsdk import HookSpec, hookspec

    class Hooks:
        @hookspec
        def numbers(self, n: int) -> Iterator[int]:  # type: ignore[empty-body]
            """Count to n, slowly."""

    spec = HookSpec("textkit", version="1.1", hooks=Hooks)
    source = """
import time
from pluginsdk import hookimpl

@hookimpl
def numbers(n):
    for i in range(n):
        time.sleep(0.002)
        yield i
"""
    install_plugin(site, "counter", source, isolation=level, hooks=("numbers",))
    with Host(spec, path=[str(site)], use_index=False) as host:
        for n in range(FIRST_INSIDE + 1):  # the last one is asked for its time
            (stream,) = host.hook.numbers(n=20 if n == FIRST_INSIDE else 0)
            assert list(range(20 if n == FIRST_INSIDE else 0)) == list(stream)
        row = one(host, "counter", "numbers")
    assert (FIRST_INSIDE + 1, 1, 1) == (row.calls, row.latency.samples, row.inside.samples)
    assert row.inside.total >= 0.040  # 20 items, 2 ms each


class TestLevels:
    def test_inprocess_plugins_are_not_measured_by_default(self, site: Path) -> None:
        install(site, "inprocess", "near")
        install(site, "process", "far")
        with hosted(site) as host:
            host.hook.transform(text="ok")
            assert ["far"] == [s.plugin for s in host.stats()]
            assert [] == host.stats("near")

    def test_all_measures_inprocess_plugins_too(self, site: Path) -> None:
        """metrics="all": in-process calls are counted (map() item by item), errors still name the plugin."""
        install(site, "inprocess", "near")
        with hosted(site, metrics="all") as host:
            for _ in range(10):
                assert ["OK"] == host.hook.transform(text="ok")
            assert [["A"], ["B"]] == host.hook.transform.map([{"text": "a"}, {"text": "b"}])
            with pytest.raises(PluginHookError) as info:
                host.hook.transform(text="raise:inside")
            assert ("near", "transform", "ValueError") == (info.value.plugin, info.value.hook, info.value.exc_type)
            row = one(host, "near")
        assert ("inprocess", 13, 13, 1) == (row.isolation, row.calls, row.items, row.errors)
        assert row.inside == row.latency and 0.0 == row.crossing  # no boundary to cross

    def test_off_measures_nothing(self, site: Path) -> None:
        install(site, "process", "far")
        with hosted(site, metrics="off") as host:
            host.hook.transform(text="ok")
            assert [] == host.stats()

    def test_a_plugin_that_failed_to_load_is_not_counted(self, site: Path) -> None:
        install_plugin(site, "broken", "raise ImportError('no')", isolation="process")
        with hosted(site) as host:
            assert [] == host.hook.transform(text="ok")
            assert [] == host.stats()

    def test_unknown_plugin(self, site: Path) -> None:
        from pluginsdk import UnknownPlugin

        with hosted(site) as host, pytest.raises(UnknownPlugin):
            host.stats("nosuch")

    def test_bad_mode(self, site: Path) -> None:
        with pytest.raises(ValueError, match="metrics must be one of"):
            Host(SPEC, path=[str(site)], metrics="sometimes")  # type: ignore[arg-type]


# -- OpenTelemetry -------------------------------------------------------------------


@pytest.fixture(scope="module")
def otel() -> Iterator[tuple[Any, Any]]:
    """The SDK's in-memory span exporter and metric reader, installed as the global providers (once)."""
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed (the otel test group)")
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    yield exporter, reader


def _points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


def test_opentelemetry_spans_and_metrics(site: Path, otel: tuple[Any, Any]) -> None:
    """Each request is a span (child of the caller's) and a data point; failures carry their outcome."""
    from opentelemetry import trace

    exporter, reader = otel
    exporter.clear()
    install(site, "process")
    with hosted(site, otel=True) as host, trace.get_tracer("test").start_as_current_span("caller") as caller:
        host.hook.transform(text="ok")
        host.hook.transform.map([{"text": "a"}, {"text": "b"}])
        with pytest.raises(PluginTimeout):
            host.hook.transform(text="sleep:30")
    spans = [s for s in exporter.get_finished_spans() if s.name == "hook transform"]
    assert 3 == len(spans)
    for span in spans:
        assert caller.get_span_context().trace_id == span.context.trace_id
        assert span.parent is not None and caller.get_span_context().span_id == span.parent.span_id
        assert ("timed", "process", "textkit") == tuple(
            span.attributes[k] for k in ("pluginsdk.plugin", "pluginsdk.isolation", "pluginsdk.spec")
        )
        assert span.start_time < span.end_time
    assert [("ok", 1), ("ok", 2), ("timeout", 1)] == [
        (s.attributes["pluginsdk.outcome"], s.attributes["pluginsdk.items"]) for s in spans
    ]
    assert trace.StatusCode.ERROR == spans[2].status.status_code
    assert "pluginsdk.PluginTimeout" == spans[2].attributes["error.type"]
    requests = {p.attributes["pluginsdk.outcome"]: p.value for p in _points(reader, "pluginsdk.plugin.requests")}
    assert {"ok": 2, "timeout": 1} == requests
    assert 3 == sum(
        p.value for p in _points(reader, "pluginsdk.plugin.items") if p.attributes["pluginsdk.outcome"] == "ok"
    )
    (inside,) = _points(reader, "pluginsdk.plugin.inside")
    assert 2 == inside.count


def test_otel_needs_metrics(site: Path) -> None:
    pytest.importorskip("opentelemetry")
    with pytest.raises(ValueError, match="not with metrics='off'"):
        Host(SPEC, path=[str(site)], metrics="off", otel=True)


def test_otel_without_the_api(site: Path, tmp_path: Path) -> None:
    """Host(otel=True) without opentelemetry-api: an ImportError naming the extra; without otel nothing is imported."""
    import subprocess
    import sys

    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path[:0] = [{str(Path(__file__).parent.parent)!r}]\n"
        "from pluginsdk import Host\n"
        "from tests.textkit import SPEC\n"
        f"Host(SPEC, path=[{str(site)!r}], use_index=False).close()\n"
        "print('plain host ok', 'pluginsdk._otel' in sys.modules)\n"
        "try:\n"
        f"    Host(SPEC, path=[{str(site)!r}], use_index=False, otel=True)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert [
        "plain host ok False",
        "Host(otel=True) needs opentelemetry-api: pip install 'pluginsdk-isolated[otel]'",
    ] == out.splitlines()
