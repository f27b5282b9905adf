"""The Ray actor that runs one guest on a node and relays its frames as bytes.

One actor is one worker of the host's pool (see
:class:`pluginsdk.backends.ray_worker.RayWorker`).  Inside it runs the same
guest as on the host's machine:

* ``process``: a worker process started with :mod:`pluginsdk.guest.worker`
  (its supervisor, memory and file caps apply as they do locally), under
  the actor's interpreter, which is the ``runtime_env``'s when the plugin has
  an ``[environment]``;
* ``wasm``: a sandbox instance (:mod:`pluginsdk._wasm.instance`) in the
  actor's own process.

The host sends each request frame as bytes and gets bytes back (see
:func:`envelope`): nothing crosses Ray but ``bytes`` built here, so the host
never unpickles anything a plugin shaped.  The actor reads only as much as
``max_message`` allows and the host checks every frame again.

A child worker must not outlive its actor, however the actor ends (``ray.kill``
ends it at once): it is started from a thread that lives as long as the actor,
and asks the kernel for SIGTERM when that thread ends (``PR_SET_PDEATHSIG``);
its supervisor then kills the worker and everything the plugin started.  Ray
may SIGKILL the supervisor first (it kills a dead worker's children), so
every process forked below it also dies with its parent (see ``_BOOT``).

Only guest-safe modules of pluginsdk are imported here for ``process`` (a node
needs pluginsdk's guest side, pluggy and msgpack, which the host ships or Ray
has); ``wasm`` imports the sandbox on the node.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections import deque
from typing import Any

from .. import codec
from .._errors import CodecError, PluginResourceError, exit_text
from ..guest import protocol as P

__all__ = ["EOF", "FRAME", "OVERSIZE", "UNDECODABLE", "GuestActor", "envelope", "unpack"]

# Reply tags: a frame's body follows, or why there is none.
FRAME, EOF, OVERSIZE, UNDECODABLE = b"F", b"E", b"R", b"C"
_LEN = struct.Struct(">I")
# Output lines: stdout, stderr, and why the guest must be replaced although it answered.
_MARKS = {"stdout": b"o", "stderr": b"e", "retire": b"r"}
#: Output lines kept between two replies (beyond them the oldest are dropped); longer lines are cut.
OUTPUT_LINES, LINE_MAX = 1000, 65536
#: Seconds between checks that a child whose channel is silent is still alive.
POLL = 0.25
#: Seconds a worker gets to exit after BYE, and the supervisor to sweep on SIGTERM, before a kill.
EXIT_GRACE, SWEEP_GRACE = 2.0, 2.5
_PR_SET_PDEATHSIG = 1
# The child's first lines: it dies with the actor's spawning thread (SIGTERM: its supervisor sweeps), and
# every process forked below it dies with its parent (SIGKILL: Ray kills a dead actor's children, and a
# supervisor killed so leaves the worker behind otherwise); then the worker, as on the host.
_BOOT = """\
import ctypes, os, signal, sys
prctl = ctypes.CDLL(None).prctl
prctl({pdeathsig}, signal.SIGTERM, 0, 0, 0)
if os.getppid() != {parent}:
    sys.exit(70)
forking = [0]
def orphan_dies():
    prctl({pdeathsig}, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != forking[0]:
        os._exit(70)
os.register_at_fork(before=lambda: forking.__setitem__(0, os.getpid()), after_in_child=orphan_dies)
sys.path[:0] = [p for p in {path!r} if p not in sys.path]
from pluginsdk.guest.worker import main
sys.exit(main())
"""


def envelope(tag: bytes, body: bytes | memoryview, output: list[tuple[str, str]]) -> bytes:
    """A reply to the host: ``tag``, the body's length, the body, then lines (``o``/``e``/``r`` + text + newline)."""
    lines = b"".join(_MARKS[stream] + text.encode("utf-8", "replace") + b"\n" for stream, text in output)
    return tag + _LEN.pack(len(body)) + bytes(body) + lines


class GuestActor:
    """Runs one guest on a Ray node (made a Ray actor by :mod:`pluginsdk._ray.cluster`).

    ``config`` is msgpack bytes of plain data: ``kind`` (``process`` or
    ``wasm``), ``plugin``, ``max_message``, and the kind's own settings;
    ``code`` the plugin's package as zip bytes (see :func:`unpack`).
    """

    def __init__(self, config: bytes, code: bytes | None = None) -> None:
        cfg = codec.decode(config)
        self._output: deque[tuple[str, str]] = deque(maxlen=OUTPUT_LINES)
        if cfg["kind"] == "process":
            self._guest: _Child | _Sandbox = _Child(cfg, self._output, None if code is None else unpack(code))
        else:
            self._guest = _Sandbox(cfg, self._output)

    def exchange(self, frame: bytes) -> bytes:
        """Write ``frame`` (if any) to the guest and return its next frame, enveloped."""
        if frame:
            self._guest.write(frame)
        try:
            body = self._guest.read_body()
        except EOFError:
            return envelope(EOF, b"", self._drain())
        except PluginResourceError as exc:
            return envelope(OVERSIZE, exc.message.encode(), self._drain())
        except CodecError as exc:
            return envelope(UNDECODABLE, exc.message.encode(), self._drain())
        output = self._drain()
        retire = self._guest.retire_reason()
        if retire is not None:
            output.append(("retire", retire))
        return envelope(FRAME, body, output)

    def detail(self) -> bytes:
        """How the guest ended (waits briefly), enveloped with the output left."""
        return envelope(EOF, self._guest.detail().encode("utf-8", "replace"), self._drain())

    def bye(self) -> None:
        """Ask the guest to exit, and stop it if it does not in time."""
        self._guest.stop()

    def node(self) -> str:
        """Where this actor runs, for status lines."""
        return f"{os.uname().nodename} pid {os.getpid()}"

    def _drain(self) -> list[tuple[str, str]]:
        out = self._output
        lines = []
        while out:
            lines.append(out.popleft())
        return lines


def unpack(code: bytes) -> str:
    """The directory where the plugin's package (zip bytes from the host) is unpacked on this node.

    One directory per content, made once per node (unpacked aside, then
    renamed into place, so actors starting together never see half of it).
    """
    digest = hashlib.sha256(code).hexdigest()[:32]
    root = os.path.join(tempfile.gettempdir(), f"pluginsdk-ray-{os.getuid()}")
    dest = os.path.join(root, digest)
    if os.path.isdir(dest):
        return dest
    os.makedirs(root, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(dir=root)
    with zipfile.ZipFile(io.BytesIO(code)) as z:
        for name in z.namelist():  # made by the host; still, nothing lands outside the directory
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"unsafe path in the plugin's package: {name!r}")
        z.extractall(work)
    try:
        os.rename(work, dest)
    except OSError:  # another actor got there first
        shutil.rmtree(work, ignore_errors=True)
    return dest


class _Child:
    """A worker process of :mod:`pluginsdk.guest.worker`, the actor's child."""

    def __init__(self, cfg: dict[str, Any], output: deque[tuple[str, str]], code: str | None) -> None:
        self.output = output
        self.stderr_tail: deque[str] = deque(maxlen=10)
        # The host's path where this node has it (unless the plugin has an environment of its own), the
        # plugin's package as the host sent it, then the actor's path: its runtime_env, the job's py_modules.
        host = [] if cfg["private"] else [p for p in cfg["path"] if os.path.isdir(p)]
        own = [p for p in sys.path if p and os.path.isdir(p)]
        self.path = list(dict.fromkeys([*host, *([code] if code else []), *own]))
        to_guest_r, self.wfd = os.pipe()
        self.rfd, to_host_w = os.pipe()
        args = [str(to_guest_r), str(to_host_w), str(cfg["memory_mb"]), str(cfg["open_files"])]
        started: deque[subprocess.Popen[bytes] | BaseException] = deque()
        ready = threading.Event()
        self._end = threading.Event()
        # The spawning thread waits until the actor ends: its end is the child's SIGTERM (PDEATHSIG).
        threading.Thread(
            target=self._spawn,
            args=(args, (to_guest_r, to_host_w), started, ready),
            name="pluginsdk-guest",
            daemon=True,
        ).start()
        ready.wait(60)  # Popen returns in milliseconds; a bound all the same
        os.close(to_guest_r)
        os.close(to_host_w)
        if not started:
            raise RuntimeError("the guest process did not start")
        proc = started[0]
        if isinstance(proc, BaseException):
            raise proc
        self.proc = proc
        self.pid = proc.pid
        threading.Thread(target=self._pump, daemon=True, name="pluginsdk-guest-output").start()
        self._poll = select.poll()
        self._poll.register(self.rfd, select.POLLIN)
        self.reader = codec.FrameReader(self._read, int(cfg["max_message"]))
        self._hello_sent = False

    def _spawn(self, args: list[str], fds: tuple[int, int], started: deque[Any], ready: threading.Event) -> None:
        boot = _BOOT.format(pdeathsig=_PR_SET_PDEATHSIG, parent=os.getpid(), path=self.path)
        try:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-I", "-u", "-c", boot, *args],
                    pass_fds=fds,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        except BaseException as exc:
            started.append(exc)
        ready.set()
        self._end.wait()

    def _pump(self) -> None:
        """Keep the child's output lines for the host, and the last stderr lines for a crash report."""
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None

        def lines(stream: Any, name: str) -> None:
            for raw in iter(lambda: stream.readline(LINE_MAX), b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if name == "stderr":
                    self.stderr_tail.append(text)
                self.output.append((name, text))

        err = threading.Thread(target=lines, args=(proc.stderr, "stderr"), daemon=True)
        err.start()
        lines(proc.stdout, "stdout")
        err.join()

    def write(self, frame: bytes) -> None:
        if not self._hello_sent:  # the guest's path is this node's (see __init__), not the host's
            self._hello_sent = True
            msg = codec.decode(memoryview(frame)[4:])
            if type(msg) is list and len(msg) == 2 and msg[0] == P.HELLO and isinstance(msg[1], dict):
                msg[1][P.PATH] = self.path
                frame = codec.encode_frame(msg)
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self.wfd, view) :]
        except OSError:  # the guest is gone: the read reports it
            pass

    def read_body(self) -> bytes | memoryview:
        return self.reader.read_body()

    def retire_reason(self) -> str | None:
        return None

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` once the child has ended (even if something it left holds the channel)."""
        while not self._poll.poll(POLL * 1000):
            if self._exited():
                break
        try:
            return os.read(self.rfd, n)
        except BlockingIOError:
            return b""

    def _exited(self) -> bool:
        if self.proc.returncode is not None:
            return True
        try:  # WNOWAIT: unreaped, its process group stays ours to kill
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def detail(self) -> str:
        if not self._wait_exit(EXIT_GRACE):
            return "closed its channel but did not exit"
        self._kill_group()
        return exit_text(self.proc.returncode, self.stderr_tail)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        self.write(codec.encode_frame([P.BYE]))
        if not self._wait_exit(EXIT_GRACE):
            self.proc.send_signal(signal.SIGTERM)  # the supervisor sweeps what the plugin started
            self._wait_exit(SWEEP_GRACE)
        self._kill_group()
        self._end.set()


class _OutputHandler(logging.Handler):
    """The sandbox's stderr lines (logged by the instance) kept for the host."""

    def __init__(self, output: deque[tuple[str, str]]) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        self.output.append(("stderr", record.getMessage()[:LINE_MAX]))


class _Sandbox:
    """A sandbox instance in the actor's process, started by the host's HELLO."""

    def __init__(self, cfg: dict[str, Any], output: deque[tuple[str, str]]) -> None:
        from .._wasm.instance import Mounts
        from .._wasm.setup import prepare

        self.cfg = cfg
        self.sandbox = prepare(cfg["interpreter"])
        m = cfg["mounts"]
        self.mounts = Mounts(
            dirs=tuple((h, g) for h, g in m["dirs"]),
            packages=dict(m["packages"]),
            modules=dict(m["modules"]),
            sys_path=tuple(m["sys_path"]),
        )
        self.log = logging.getLogger(f"pluginsdk.plugin.{cfg['plugin']}")
        self.log.propagate = False
        self.log.addHandler(_OutputHandler(output))
        self.instance: Any = None

    def write(self, frame: bytes) -> None:
        msg = codec.decode(memoryview(frame)[4:])
        if self.instance is None:  # the HELLO: it starts the instance, which sends it on
            from .._wasm.instance import Instance

            cfg = self.cfg
            self.instance = Instance(
                self.sandbox,
                msg[1],
                self.mounts,
                max_message=int(cfg["max_message"]),
                memory_mb=int(cfg["memory_mb"]),
                open_files=int(cfg["open_files"]),
                log=self.log,
                spin=float(cfg["spin"]),
            )
            return
        self.instance.send(msg)

    def read_body(self) -> bytes | memoryview:
        if self.instance is None:
            raise EOFError("the sandbox was never started")
        body: bytes | memoryview = self.instance.reader.read_body()
        return body

    def retire_reason(self) -> str | None:
        """An instance refused a file is replaced (see :meth:`pluginsdk._wasm.instance.Instance.retire_reason`)."""
        return None if self.instance is None else self.instance.retire_reason()

    def detail(self) -> str:
        if self.instance is None:
            return "the sandbox was never started"
        return str(self.instance.death_detail())

    def stop(self) -> None:
        if self.instance is not None:
            self.instance.stop()
