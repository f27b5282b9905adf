"""The descriptor gate: count the files a guest holds open, in the host, and refuse past a cap.

Every file the guest opens is a descriptor of the host process (wasmtime's
WASI opens it on the guest's behalf), and wasmtime has no per-store cap on
them.  The guest reaches a new descriptor only through the WASI import
``path_open`` (and drops one through ``fd_close`` / ``fd_renumber``), so
the interpreter module is rewritten once, when it is compiled, to import
those calls from the gate instead.  The gate makes the real WASI call and
keeps the count in wasm, so an open or a close costs no call into Python.
An open past the instance's ``open_files`` cap fails with ``EMFILE`` (what
``RLIMIT_NOFILE`` does in a worker process).

All instances together share a budget of :data:`HOST_FILES_SHARE` of the
host's soft descriptor limit, kept by :class:`OpenFiles`: the gate reserves
slots :data:`RESERVE_CHUNK` at a time and gives back what goes unused past
two chunks (with a refusal, the only calls into Python).  The first
:data:`BUDGET_FLOOR` slots of each instance are free of the budget: an idle
instance holds none of it, and one plugin hoarding the budget cannot keep
the others from importing their code.  The host keeps half its table, less
that floor per live instance.

What counts: every successful ``path_open``; a successful close (or
renumbering over) of a descriptor numbered 3 or above uncounts one.  Of the
imports, only ``path_open`` makes descriptors that last (``sock_accept``
needs a listening socket, and the sandbox is given none), so a close is of a
counted file, except for the preopened directories and standard streams
moved above 2: closing those lets a guest hold that many more (a handful),
never an unbounded number.

The gate also takes ``poll_oneoff`` when it waits on a clock alone (a
``time.sleep``): the host sleeps in slices instead, and traps the guest as
soon as its instance is stopped.  Without it a guest asleep in that host
call could not be interrupted, and a timed-out instance (its thread, memory
and descriptors) would outlive its replacement until the sleep ended.

Why shims written in wasm and not Python functions in the linker: WASI
finds the caller's memory through the *calling instance's* ``memory``
export, and a host function calling another host function has no calling
instance.  So the real WASI call is made by a shim module that exports the
interpreter's memory as its own.  That shim can only be instantiated after
the interpreter (it imports the memory), while the interpreter needs its
imports at instantiation: a trampoline module breaks the cycle, forwarding
each gated call through a table the host fills once the shim exists.  The
interpreter keeps its own memory (and with it wasmtime's copy-on-write
memory image: an imported memory would have its data copied in, ~15 MiB per
instance), and the rewrite renames the gated imports' module, nothing else: no
index moves, so the rest of the binary stays byte for byte what was verified.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "BUDGET_FLOOR",
    "HOST_FILES_SHARE",
    "RESERVE_CHUNK",
    "REWRITE_VERSION",
    "OpenFiles",
    "instantiate",
    "rewrite",
]

#: Share of the host's RLIMIT_NOFILE (soft) all instances together may hold.
HOST_FILES_SHARE = 0.5
#: Files an instance may always hold, budget or not (an import opens one at a time).
BUDGET_FLOOR = 16
#: Budget slots an instance reserves at a time (and keeps spare when its files are closed).
RESERVE_CHUNK = 16
#: Longest the host sleeps for a guest before checking whether its instance was stopped (seconds).
SLEEP_SLICE = 0.05
#: Bumped when :func:`rewrite` changes what it writes (part of the compiled-module cache key).
REWRITE_VERSION = 3  # the shims are not part of it: they are compiled per process

_WASI = "wasi_snapshot_preview1"
_GATED = "pluginsdk_files"  # what the rewritten interpreter imports the gated calls from
_GATE = "pluginsdk_gate"  # the host functions the shim reports to
_GATED_CALLS = ("path_open", "fd_close", "fd_renumber", "poll_oneoff")
_ERRNO_MFILE = 33  # WASI's "too many open files"

_OPEN = "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)"
_CLOSE = "(param i32) (result i32)"
_RENUMBER = "(param i32 i32) (result i32)"
_POLL = "(param i32 i32 i32 i32) (result i32)"

# What the interpreter's gated imports resolve to: a jump through a table
# (filled with the shim's functions, see instantiate()).
_TRAMPOLINE = f"""
(module
  (type $open (func {_OPEN}))
  (type $close (func {_CLOSE}))
  (type $renumber (func {_RENUMBER}))
  (type $poll (func {_POLL}))
  (table (export "table") 4 funcref)
  (func (export "path_open") (type $open)
    (call_indirect (type $open) (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)
      (local.get 5) (local.get 6) (local.get 7) (local.get 8) (i32.const 0)))
  (func (export "fd_close") (type $close)
    (call_indirect (type $close) (local.get 0) (i32.const 1)))
  (func (export "fd_renumber") (type $renumber)
    (call_indirect (type $renumber) (local.get 0) (local.get 1) (i32.const 2)))
  (func (export "poll_oneoff") (type $poll)
    (call_indirect (type $poll) (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 3))))
"""

# The real WASI calls, made from an instance whose "memory" is the interpreter's,
# with the count of open files kept here (see the module doc).
_SHIM = f"""
(module
  (import "{_GATE}" "memory" (memory 0))
  (import "{_WASI}" "path_open" (func $open {_OPEN}))
  (import "{_WASI}" "fd_close" (func $close {_CLOSE}))
  (import "{_WASI}" "fd_renumber" (func $renumber {_RENUMBER}))
  (import "{_WASI}" "poll_oneoff" (func $poll {_POLL}))
  (import "{_WASI}" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (import "{_GATE}" "limit" (global $limit i32))
  (import "{_GATE}" "reserve" (func $reserve (param i32) (result i32)))
  (import "{_GATE}" "release" (func $release (param i32) (result i32)))
  (import "{_GATE}" "refuse" (func $refuse (param i32)))
  (import "{_GATE}" "sleep" (func $sleep (param i64)))
  (global $held (mut i32) (i32.const 0))
  (global $reserved (mut i32) (i32.const 0))
  (export "memory" (memory 0))
  (func (export "path_open")
    (param $dir i32) (param $dirflags i32) (param $path i32) (param $len i32) (param $oflags i32)
    (param $base i64) (param $inheriting i64) (param $fdflags i32) (param $out i32) (result i32)
    (local $errno i32)
    (if (i32.ge_u (global.get $held) (global.get $limit))
      (then (call $refuse (global.get $held)) (return (i32.const {_ERRNO_MFILE}))))
    (if (i32.ge_u (global.get $held) (global.get $reserved))
      (then
        (global.set $reserved (call $reserve (global.get $held)))
        (if (i32.ge_u (global.get $held) (global.get $reserved))
          (then (return (i32.const {_ERRNO_MFILE}))))))
    (local.set $errno (call $open (local.get $dir) (local.get $dirflags) (local.get $path)
      (local.get $len) (local.get $oflags) (local.get $base) (local.get $inheriting)
      (local.get $fdflags) (local.get $out)))
    (if (i32.eqz (local.get $errno))
      (then (global.set $held (i32.add (global.get $held) (i32.const 1)))))
    (local.get $errno))
  (func $dropped (param $fd i32)
    (if (i32.and (i32.ge_u (local.get $fd) (i32.const 3)) (i32.ne (global.get $held) (i32.const 0)))
      (then
        (global.set $held (i32.sub (global.get $held) (i32.const 1)))
        (if (i32.gt_u (i32.sub (global.get $reserved) (global.get $held)) (i32.const {2 * RESERVE_CHUNK}))
          (then (global.set $reserved (call $release (global.get $held))))))))
  (func (export "fd_close") (param $fd i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $close (local.get $fd)))
    (if (i32.eqz (local.get $errno)) (then (call $dropped (local.get $fd))))
    (local.get $errno))
  (func (export "fd_renumber") (param $from i32) (param $to i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $renumber (local.get $from) (local.get $to)))
    ;; "to" was closed, unless it is "from" (a no-op)
    (if (i32.and (i32.eqz (local.get $errno)) (i32.ne (local.get $from) (local.get $to)))
      (then (call $dropped (local.get $to))))
    (local.get $errno))
  ;; One subscription, a clock (a sleep): the host sleeps, then the real call
  ;; answers at once.  Layout (WASI preview 1): tag at +8; clock id at +16
  ;; (0-3 are valid), timeout (ns) at +24, flags at +40 (bit 0: absolute).
  ;; Anything else is the real call's, errors included.
  (func (export "poll_oneoff") (param $in i32) (param $out i32) (param $n i32) (param $nevents i32) (result i32)
    (local $timeout i64) (local $relative i32) (local $errno i32)
    (if (i32.or (i32.ne (local.get $n) (i32.const 1))
          (i32.or (i32.load8_u offset=8 (local.get $in)) (i32.gt_u (i32.load offset=16 (local.get $in)) (i32.const 3))))
      (then (return (call $poll (local.get $in) (local.get $out) (local.get $n) (local.get $nevents)))))
    (local.set $timeout (i64.load offset=24 (local.get $in)))
    (local.set $relative (i32.eqz (i32.and (i32.load16_u offset=40 (local.get $in)) (i32.const 1))))
    (if (local.get $relative)
      (then (call $sleep (local.get $timeout)))
      (else
        ;; absolute: the time left, on the same clock (read into the event buffer, overwritten below)
        (local.set $errno (call $now (i32.load offset=16 (local.get $in)) (i64.const 1) (local.get $out)))
        (if (local.get $errno) (then (return (local.get $errno))))
        (if (i64.gt_u (local.get $timeout) (i64.load (local.get $out)))
          (then (call $sleep (i64.sub (local.get $timeout) (i64.load (local.get $out))))))))
    (if (local.get $relative) (then (i64.store offset=24 (local.get $in) (i64.const 0))))
    (local.set $errno (call $poll (local.get $in) (local.get $out) (local.get $n) (local.get $nevents)))
    (if (local.get $relative) (then (i64.store offset=24 (local.get $in) (local.get $timeout))))
    (local.get $errno)))
"""

_compile_lock = threading.Lock()
_serialized: dict[str, bytes] = {}


class OpenFiles:
    """One instance's share of the host's descriptor budget, and why it was refused.

    The gate (in wasm) counts the files the guest holds; it calls in here,
    on the instance's own thread, only to reserve more slots, to hand spare
    ones back, and when it refuses an open.  ``held`` is the count as of its
    last call.  Slots beyond :data:`BUDGET_FLOOR` are charged to the
    process-wide total (locked).
    """

    _total = 0
    _total_lock = threading.Lock()

    def __init__(self, limit: int) -> None:
        # The gate compares against an i32: past that, no cap.
        self.limit = min(limit, 2**31 - 1) if limit > 0 else 2**31 - 1
        self.held = 0  # files the guest held at its last call in here
        self.reserved = 0  # slots this instance may fill
        self.refused = 0  # opens refused so far: the backend then replaces the instance
        self.refused_by = ""  # what refused the first of them: "cap" or "budget"

    @classmethod
    def total(cls) -> int:
        """Budget slots charged to the guests of this process, all instances together."""
        return cls._total

    @staticmethod
    def host_budget() -> int:
        """How many descriptors all guests together may hold, beyond each one's floor."""
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return 2**31 if soft == resource.RLIM_INFINITY else int(soft * HOST_FILES_SHARE)

    def reserve(self, held: int) -> int:
        """The guest holds ``held`` files and no spare slot: reserve more; the new reservation.

        Unchanged means refused (the budget is spent, and ``held`` is past the floor).
        """
        self.held = held
        want = min(held + RESERVE_CHUNK, self.limit)
        with OpenFiles._total_lock:
            room = self.host_budget() - OpenFiles._total
            new = min(want, BUDGET_FLOOR + max(0, _charge(self.reserved) + room))
            if new > held:
                OpenFiles._total += _charge(new) - _charge(self.reserved)
                self.reserved = new
                return new
        self._refuse("budget")
        return self.reserved

    def release(self, held: int) -> int:
        """The guest closed files: keep one chunk spare, give the rest back; the new reservation."""
        self.held = held
        keep = min(self.reserved, held + RESERVE_CHUNK)
        with OpenFiles._total_lock:
            OpenFiles._total -= _charge(self.reserved) - _charge(keep)
        self.reserved = keep
        return keep

    def refuse(self, held: int) -> None:
        """The gate refused an open: the guest holds its cap."""
        self.held = held
        self._refuse("cap")

    def _refuse(self, by: str) -> None:
        self.refused += 1
        self.refused_by = self.refused_by or by

    def release_all(self) -> None:
        """The instance's store is gone, and with it every descriptor it held.  Idempotent."""
        with OpenFiles._total_lock:
            OpenFiles._total -= _charge(self.reserved)
        self.reserved = 0


def _charge(reserved: int) -> int:
    """What a reservation costs the shared budget: the floor is free."""
    return max(0, reserved - BUDGET_FLOOR)


# -- the rewrite (once, before the interpreter is compiled) --------------------


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _name(data: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _uleb(data, pos)
    return data[pos : pos + size], pos + size


def _limits_end(data: bytes, pos: int) -> int:
    flags = data[pos]
    _, pos = _uleb(data, pos + 1)
    if flags & 1:
        _, pos = _uleb(data, pos)
    return pos


def _import_end(data: bytes, pos: int) -> int:
    """Where the import descriptor of ``kind`` (at ``pos``) ends."""
    kind = data[pos]
    pos += 1
    if kind == 0:  # function: type index
        return _uleb(data, pos)[1]
    if kind == 1:  # table: element type, limits
        return _limits_end(data, pos + 1)
    if kind == 2:  # memory: limits
        return _limits_end(data, pos)
    if kind == 3:  # global: value type, mutability
        return pos + 2
    if kind == 4:  # tag: attribute, type index
        return _uleb(data, pos + 1)[1]
    raise ValueError(f"unknown import kind {kind}")


def rewrite(wasm: bytes) -> bytes:
    """The interpreter module with its descriptor calls imported from the gate (see module doc).

    Raises ``ValueError`` for a module this cannot gate.
    """
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise ValueError("not a WebAssembly module (version 1)")
    out, gated, pos = [wasm[:8]], set(), 8
    while pos < len(wasm):
        section_id = wasm[pos]
        size, start = _uleb(wasm, pos + 1)
        body, pos = wasm[start : start + size], start + size
        if section_id == 2:  # imports
            count, p = _uleb(body, 0)
            entries = []
            for _ in range(count):
                module, p = _name(body, p)
                field, p = _name(body, p)
                end = _import_end(body, p)
                if module == _WASI.encode() and field.decode() in _GATED_CALLS:
                    module = _GATED.encode()
                    gated.add(field.decode())
                entries.append(_leb(len(module)) + module + _leb(len(field)) + field + body[p:end])
                p = end
            if p != len(body):
                raise ValueError("the import section has bytes past its last import")
            body = _leb(count) + b"".join(entries)
        out.append(bytes([section_id]) + _leb(len(body)) + body)
    if not gated >= {"path_open", "fd_close"}:  # the others only if the module uses them
        raise ValueError(f"expected the module to import path_open and fd_close from {_WASI}")
    return b"".join(out)


# -- per instance ------------------------------------------------------------------


def _compiled(engine: Any, name: str, source: str) -> Any:
    """A helper module for ``engine``: compiled once per process, then deserialized (~0.1 ms)."""
    import wasmtime

    with _compile_lock:
        if name not in _serialized:
            _serialized[name] = bytes(wasmtime.Module(engine, source).serialize())
        return wasmtime.Module.deserialize(engine, _serialized[name])


class Stopped(Exception):
    """Raised in a host call of a guest whose instance was stopped: it unwinds the guest to the host."""


def _sleeper(stopped: Callable[[], bool]) -> Callable[[int], None]:
    def sleep(nanoseconds: int) -> None:
        # An i64 on the wasm side: a "forever" timeout (u64 max) arrives negative.
        end = time.monotonic() + (nanoseconds & 0xFFFFFFFFFFFFFFFF) / 1e9
        while not stopped():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, SLEEP_SLICE))
        raise Stopped("the instance was stopped during a sleep")

    return sleep


def instantiate(
    engine: Any, linker: Any, store: Any, module: Any, files: OpenFiles, stopped: Callable[[], bool] = bool
) -> Any:
    """Instantiate the (rewritten) interpreter ``module`` with its descriptor calls gated by ``files``.

    ``linker`` already defines WASI, and ``store`` has its WASI configuration;
    ``stopped()`` says whether the instance was stopped (checked while the guest sleeps).
    """
    import wasmtime

    trampoline = linker.instantiate(store, _compiled(engine, "trampoline", _TRAMPOLINE))
    linker.define_instance(store, _GATED, trampoline)
    interpreter = linker.instantiate(store, module)
    i32 = wasmtime.ValType.i32()
    linker.define(store, _GATE, "memory", interpreter.exports(store)["memory"])
    limit = wasmtime.Global(store, wasmtime.GlobalType(i32, False), wasmtime.Val.i32(files.limit))
    linker.define(store, _GATE, "limit", limit)
    linker.define_func(_GATE, "reserve", wasmtime.FuncType([i32], [i32]), files.reserve)
    linker.define_func(_GATE, "release", wasmtime.FuncType([i32], [i32]), files.release)
    linker.define_func(_GATE, "refuse", wasmtime.FuncType([i32], []), files.refuse)
    linker.define_func(_GATE, "sleep", wasmtime.FuncType([wasmtime.ValType.i64()], []), _sleeper(stopped))
    shim = linker.instantiate(store, _compiled(engine, "shim", _SHIM)).exports(store)
    table = trampoline.exports(store)["table"]
    for index, name in enumerate(_GATED_CALLS):
        table.set(store, index, shim[name])
    return interpreter
