"""Answering a ``GATHER``: many independent calls in one request (see :mod:`.protocol`).

Each call runs on its own: one that raises, or whose arguments cannot be
read, becomes an error entry, and the next call still runs.  The answers go
back in one ``GATHERED`` frame when the gather is quick; once it has run
:data:`~.protocol.GATHER_FLUSH` seconds, what is answered is sent before each
further call, so the host sees progress call by call (its deadline is
re-armed by each frame) and knows which call a crash or a hang was in.

Guest-safe: imports only the guest side.
"""

from __future__ import annotations

import time
from _collections_abc import Iterator

from .. import codec
from .._errors import PluginResourceError, exception_text, format_traceback, type_name
from . import awaiting
from . import protocol as P
from .impls import ArgumentError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .loop import Guest

_PLAIN = frozenset((type(None), bool, int, float, str, bytes, list, dict, tuple))
_COROUTINE = awaiting.COROUTINE
_monotonic = time.monotonic


def _failure(exc: BaseException) -> list[Any]:
    """An error entry's fields after its position: kind, type, message, traceback, argument."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        exc.__traceback__ = tb.tb_next  # this module's frame is noise in the plugin's traceback
    kind = P.RESOURCE if isinstance(exc, MemoryError) else P.HOOK
    return [kind, type_name(type(exc)), exception_text(exc), format_traceback(exc), None]


def serve_gather(guest: Guest, rid: int, calls: Any) -> None:
    """Run ``calls`` (``[[hook, args], ...]``) and answer them (see the module docstring)."""
    if type(calls) is not list or not calls:
        guest.send(P.error_frame(rid, P.PROTOCOL, "ProtocolError", "a gather needs a non-empty list of calls"))
        return
    impls = guest.impls
    values: list[Any] = []
    errors: list[list[Any]] = []
    flush_at = _monotonic() + P.GATHER_FLUSH
    for call in calls:
        if values and _monotonic() > flush_at:  # a slow gather: answer as it goes
            _send(guest, rid, values, errors, last=False)
            values, errors = [], []
        try:
            hook, args = call
            impl = impls[hook]
        except (TypeError, ValueError, KeyError):
            what = f"not a call of a hook served here: {call!r}"[:200]
            errors.append([len(values), P.PROTOCOL, "ProtocolError", what, "", None])
            values.append(None)
            continue
        try:
            result = impl.func(*args) if impl.whole else impl.func(*impl.arguments(args, hook))
            if type(result) not in _PLAIN:
                if type(result) is _COROUTINE:
                    result = awaiting.run(result)
                if isinstance(result, Iterator):  # a gather has no room for streams: sent whole
                    result = list(result)
        except ArgumentError as exc:
            errors.append([len(values), P.CODEC, "CodecError", exc.reason, "", exc.argument])
            values.append(None)
            continue
        except BaseException as exc:
            errors.append([len(values), *_failure(exc)])
            values.append(None)
            continue
        values.append(result)
    _send(guest, rid, values, errors, last=True)


def _send(guest: Guest, rid: int, values: list[Any], errors: list[list[Any]], *, last: bool) -> None:
    """One ``GATHERED`` frame; values that cannot cross become errors of their own calls."""
    try:
        frame = codec.encode_frame([P.GATHERED, rid, values, errors, last], guest.max_message)
    except Exception:
        frame = b""
    if frame:
        guest._write(frame)
        return
    # Some value cannot be encoded, or the answers do not fit one frame: one call per frame.
    failed = {e[0]: e for e in errors}
    for i, value in enumerate(values):
        entry = failed.get(i)
        final = last and i == len(values) - 1
        if entry is None:
            try:
                frame = codec.encode_frame([P.GATHERED, rid, [value], [], final], guest.max_message)
            except PluginResourceError as exc:
                entry = [i, P.RESOURCE, "MessageTooLarge", exc.message, "", None]
            except Exception as exc:
                entry = [i, P.CODEC, type_name(type(exc)), codec.describe_error(exc), "", "return value"]
            else:
                guest._write(frame)
                continue
        guest.send([P.GATHERED, rid, [None], [[0, *entry[1:]]], final])
