"""A worker process's entry point: limits, a supervisor for everything the plugin starts, the loop.

``python -I -u -c <boot> READ_FD WRITE_FD MEMORY_MB OPEN_FILES`` (see
:mod:`pluginsdk.backends.os_worker`) ends in :func:`main`.

Supervision (Linux): the process the host started becomes a *child
subreaper* and forks; the child serves the plugin, the parent only waits.
Whatever the plugin starts, by any route (a double fork, ``setsid``, a
daemon), is orphaned to the supervisor rather than to init, so when the
worker ends, or the host asks (``SIGTERM``), the supervisor kills every
process left below it and exits with the worker's own status.  A process
group kill would miss those that left the group, and they may hold the
worker's channel open (the host would never see the worker die) or simply
outlive the host.  A plugin can still kill its supervisor (workers share the
user's permissions; see the documentation); the host then falls back to
killing the process group.

Guest-safe: the standard library and the guest package only.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: Seconds the supervisor spends killing what is left before it gives up on a process.
SWEEP_DEADLINE = 2.0
_PR_SET_CHILD_SUBREAPER = 36


def _limit_memory(megabytes: int) -> None:
    """Cap this process's address space (RLIMIT_AS): every mapping counts.

    That is heap, thread stacks, mmapped files and shared libraries alike, so
    the cap must leave room for the interpreter (~30 MiB of mappings) on top
    of what the plugin means to use.  Allocations beyond it fail, which
    Python reports as MemoryError.  Each process the plugin forks gets the
    same cap of its own.
    """
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _move_down(fd: int) -> int:
    """``fd`` renumbered to the lowest free descriptor (the host passes its own, often high, numbers)."""
    low = os.dup(fd)  # the lowest free number, not inheritable
    if low < fd:
        os.close(fd)
        return low
    os.close(low)
    return fd


def _limit_open_files(count: int, highest: int) -> None:
    """Let the plugin hold ``count`` more descriptors than this process has open now (RLIMIT_NOFILE).

    The limit bounds descriptor *numbers*, so it counts from the highest in
    use (``highest`` if procfs cannot say); soft and hard alike, so the
    plugin cannot raise it again.
    """
    import resource

    try:
        listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        listed = []
    for fd in listed:  # the listing's own descriptor, closed by now, is not in use
        try:
            os.fstat(fd)
            highest = max(highest, fd)
        except OSError:
            pass
    limit = highest + 1 + count
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


# -- supervision ---------------------------------------------------------------


def _become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux); whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except Exception:  # no libc to speak of (a static interpreter...): group kills only
        return False


def _children() -> list[int]:
    """This process's children, zombies included (the supervisor is single-threaded)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: read every process's parent
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        # The name (field 2) may hold spaces and parentheses: split after its end.
                        fields = f.read().rsplit(b")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(fields[1]) == pid:
                    found.append(int(entry))
        return found


def _reap_all() -> None:
    """Collect every child that has ended, without waiting for the others."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _sweep() -> None:
    """Kill every process left below this one: killed children's own children come to us next."""
    import time

    deadline = time.monotonic() + SWEEP_DEADLINE
    while time.monotonic() < deadline:
        _reap_all()
        left = _children()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.001)


def _supervise(worker: int) -> int:
    """Wait for ``worker``; on its end, or on SIGTERM from the host, kill everything below and mirror its status."""

    def stop(signum: int, frame: object) -> None:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # orphans adopted from below are reaped as they end
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == worker:
            break
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _sweep()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            pass
        os.kill(os.getpid(), sig)  # die the way the worker did, so the host reports it truly
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Worker-process entry: ``READ_FD WRITE_FD MEMORY_MB [OPEN_FILES]``."""
    import io

    from .loop import serve

    args = list(sys.argv[1:] if argv is None else argv)
    read_fd, write_fd, memory_mb = int(args[0]), int(args[1]), int(args[2])
    open_files = int(args[3]) if len(args) > 3 else 0
    # Ctrl-C in a terminal reaches the whole process group; the host decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv is None and _become_subreaper():
        worker = os.fork()
        if worker:
            os.close(read_fd)  # the channel is the worker's alone: its end is seen at once
            os.close(write_fd)
            return _supervise(worker)
    if memory_mb > 0:
        _limit_memory(memory_mb)
    if open_files > 0:
        read_fd, write_fd = _move_down(read_fd), _move_down(write_fd)
        if argv is None:  # keep ``sys.argv`` saying where the channel is
            sys.argv[1:3] = [str(read_fd), str(write_fd)]
        _limit_open_files(open_files, max(read_fd, write_fd))
    for fd in (read_fd, write_fd):  # nothing the plugin starts inherits the channel
        os.set_inheritable(fd, False)
    reader = io.FileIO(read_fd, "rb", closefd=True)
    writer = io.FileIO(write_fd, "wb", closefd=True)
    try:
        return serve(reader.read, writer.write)
    except BrokenPipeError:
        return 0
