"""The host-guest protocol: every message kind, error kind and handshake field, in one place.

Every message is one frame (see :mod:`pluginsdk.codec`).  Requests carry an
id that their replies echo, so a reply is matched to its request: a frame a
guest sends unasked (a second reply, text written to the channel) is never
taken for the answer to a later request::

    host -> guest                         guest -> host
    [HELLO, config]                       [READY, info] | [ERR, 0, "load", ...]
    [CALL, id, hook, args(, 1)]           [OK, id, value(, ns)] | [ERR, id, ...] | stream
    [BATCH, id, hook, [args, ...](, 1)]   [OK, id, [value, ...](, ns)] | [ERR, id, ...]
    [GATHER, id, [[hook, args], ...]]     [GATHERED, id, values, errors, last] ... (see below)
    stream:                               [CHUNK, id, items] ... [END, id, items]
      after each CHUNK: [MORE, id] | [CANCEL, id] (CANCEL is answered by [END, id, [](, ns)])
    [BYE]                                 (the guest exits)

Ids cycle through 1 to 127, so each costs one byte to encode and decode (the
sandbox's codec is pure Python); that is enough, since a worker that sends
anything but the expected reply is replaced at once: no two frames in flight
on one channel can share an id.

The host's metrics time a sample of the requests (see :mod:`pluginsdk._stats`);
for those, ``CALL`` and ``BATCH`` carry a fifth field, ``1``:
``[CALL, id, hook, args, 1]`` asks for the nanoseconds the guest spent in the
plugin's own code for the request (for a batch, all its items; for a stream,
producing all its items), which its ``OK`` or ``END`` then carries as a
fourth field: ``[OK, id, value, ns]``.  Other requests keep four fields, and
their replies three (no clock is read).  Both shapes of ``OK``/``END`` are
well-formed (:func:`check_reply`); the host takes the time only as a whole
number (anything else is a protocol violation), uses it only if it asked,
and ignores one that no deadline could allow.

``ERR`` frames are ``[ERR, id, kind, exc_type, message, traceback, index,
argument]``: ``index`` is the batch item concerned (or None), ``argument``
the argument a codec error is about (or None).

``GATHER`` carries many independent calls (coalesced callers' calls, see
:mod:`pluginsdk.backends.coalesce`): the guest runs them in order, each on
its own (one raising does not stop the next), and answers with one or more
``GATHERED`` frames: ``values`` are the outcomes of the next calls in order
(``None`` where one failed), ``errors`` the failures among them as
``[position in values, kind, exc_type, message, traceback, argument]``, and
``last`` is true on the frame that answers the final call.  A gather sends
one frame when it is quick; one that runs longer than
:data:`GATHER_FLUSH` seconds sends what it has before each further call, so
the host sees progress, and learns which call a crash or a hang was in.

HELLO's config is built by :func:`hello` only; READY's info holds
:data:`IMPLS` (hook -> its ``tryfirst``/``trylast``) and :data:`CODEC_NAME`.
The host checks every frame from a guest with :func:`check_reply` and
:func:`check_ready` before using it; a frame that fails is a protocol
violation, and the worker that sent it is replaced.

Guest-safe: the standard library only, and nothing at import time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# Message kinds (small ints: one byte on the wire).
HELLO, CALL, BATCH, MORE, CANCEL, BYE, GATHER = 0, 1, 2, 3, 4, 5, 6
READY, OK, ERR, CHUNK, END, GATHERED = 10, 11, 12, 13, 14, 15

# Error kinds: the plugin raised; a value could not cross; a cap was hit; the
# plugin could not be loaded; a request made no sense to the guest.
HOOK, CODEC, RESOURCE, LOAD, PROTOCOL = "hook", "codec", "resource", "load", "protocol"
ERROR_KINDS = frozenset((HOOK, CODEC, RESOURCE, LOAD, PROTOCOL))

# HELLO's fields.
MODULE, ATTR, HOOKS, PATH, MAX_MESSAGE, STREAMS = "module", "attr", "hooks", "path", "max_message", "streams"
# READY's fields.
IMPLS, CODEC_NAME = "impls", "codec"

#: The id of the handshake's replies; requests' ids cycle through 1 to 127.
HANDSHAKE_ID = 0
#: Seconds a gather runs before the guest sends its outcomes call by call (see above).
GATHER_FLUSH = 0.002


def hello(
    *,
    module: str,
    attr: str | None,
    hooks: Mapping[str, Sequence[str]],
    path: Sequence[str],
    max_message: int,
    streams: Sequence[str],
) -> dict[str, Any]:
    """HELLO's config.

    ``hooks``: each hook the plugin implements, with the spec's argument names
    in call order; ``path``: entries to put on the guest's ``sys.path``;
    ``streams``: the hooks whose results may stream (the spec returns an
    iterator); any other hook's iterator result is sent whole.
    """
    return {
        MODULE: module,
        ATTR: attr,
        HOOKS: {h: list(a) for h, a in hooks.items()},
        PATH: list(path),
        MAX_MESSAGE: max_message,
        STREAMS: list(streams),
    }


def error_frame(
    rid: int, kind: str, exc_type: str, message: str, tb: str = "", index: int | None = None, argument: Any = None
) -> list[Any]:
    """An ``ERR`` frame (the one place its layout is written down on the guest side)."""
    return [ERR, rid, kind, exc_type, message, tb, index, argument]


class ProtocolViolation(Exception):
    """A frame from a guest broke the protocol; the worker that sent it must be replaced."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return type(value) is int


def check_reply(msg: Any, rid: int, *, items: int | None = None, stream: bool = False) -> list[Any]:
    """``msg`` if it is a well-formed reply to request ``rid``; else :class:`ProtocolViolation`.

    ``items``: the batch's size, for a reply to a batch (its values, or the
    index an error names, must fit); ``stream``: whether a stream may answer.
    """
    if type(msg) is not list or not msg:
        raise ProtocolViolation(f"a reply must be a non-empty list, got {_show(msg)}")
    kind = msg[0]
    if kind == ERR and type(kind) is int:
        return check_error(msg, rid, items=items)
    if kind not in (OK, CHUNK, END) or type(kind) is not int:
        raise ProtocolViolation(f"unexpected message kind {_show(kind)} in reply to request {rid}")
    if len(msg) != 3 and (len(msg) != 4 or kind == CHUNK):
        raise ProtocolViolation(
            f"a reply of kind {kind} has {'3' if kind == CHUNK else '3 or 4'} fields, got {len(msg)}"
        )
    if len(msg) == 4 and not _is_int(msg[3]):
        raise ProtocolViolation(f"a reply's time inside the plugin must be whole nanoseconds, got {_show(msg[3])}")
    if not _is_int(msg[1]) or msg[1] != rid:
        raise ProtocolViolation(f"a reply to request {_show(msg[1])} arrived while request {rid} was waiting")
    if kind == OK:
        if items is not None and (type(msg[2]) is not list or len(msg[2]) != items):
            raise ProtocolViolation(f"a batch of {items} items was answered with {_show(msg[2])}")
    elif not stream:
        raise ProtocolViolation("a stream answered a request that cannot stream")
    elif type(msg[2]) is not list:
        raise ProtocolViolation(f"a stream chunk must be a list, got {_show(msg[2])}")
    return msg


def inside_ns(msg: list[Any], limit: int) -> int:
    """The nanoseconds a checked ``OK``/``END`` frame says the plugin spent, or -1.

    -1 when the frame carries none, or a figure outside ``0..limit`` (a
    request cannot take longer than its deadline): ignored, never trusted.
    """
    if len(msg) == 4:
        ns = msg[3]
        if type(ns) is int and 0 <= ns <= limit:
            return ns
    return -1


def check_error(msg: list[Any], rid: int, *, items: int | None = None) -> list[Any]:
    """``msg`` if it is a well-formed ``ERR`` frame for request ``rid``; else :class:`ProtocolViolation`."""
    if len(msg) != 8:
        raise ProtocolViolation(f"an error frame has 8 fields, got {len(msg)}")
    _, got, kind, exc_type, message, traceback, index, argument = msg
    if not _is_int(got) or got != rid:
        raise ProtocolViolation(f"an error for request {_show(got)} arrived while request {rid} was waiting")
    if kind not in ERROR_KINDS or type(kind) is not str:
        raise ProtocolViolation(f"unknown error kind {_show(kind)}")
    for field, value in (("type", exc_type), ("message", message), ("traceback", traceback)):
        if type(value) is not str:
            raise ProtocolViolation(f"an error's {field} must be a string, got {_show(value)}")
    if index is not None and (not _is_int(index) or items is None or not 0 <= index < items):
        raise ProtocolViolation(f"an error names batch item {_show(index)} of {items or 0}")
    if argument is not None and type(argument) is not str:
        raise ProtocolViolation(f"an error's argument must be a string, got {_show(argument)}")
    return msg


def check_gathered(msg: Any, rid: int, left: int) -> tuple[list[Any], dict[int, list[Any]], bool]:
    """``(values, errors by position, last)`` of a well-formed ``GATHERED`` frame answering
    request ``rid``, of which ``left`` calls are unanswered; else :class:`ProtocolViolation`.

    Each error is returned as an ``ERR`` frame (``[ERR, rid, kind, ...]``,
    checked by :func:`check_error`), so it is translated as any other.
    """
    if type(msg) is not list or len(msg) != 5 or msg[0] != GATHERED or type(msg[0]) is not int:
        raise ProtocolViolation(f"expected the answers to gather {rid}, got {_show(msg)}")
    _, got, values, errors, last = msg
    if not _is_int(got) or got != rid:
        raise ProtocolViolation(f"answers to request {_show(got)} arrived while gather {rid} was waiting")
    if type(values) is not list or not 0 < len(values) <= left:
        raise ProtocolViolation(f"a gather with {left} calls unanswered was sent {_show(values)}")
    if type(last) is not bool or last != (len(values) == left):
        raise ProtocolViolation(f"a gather's 'last' must say whether every call is answered, got {_show(last)}")
    if type(errors) is not list:
        raise ProtocolViolation(f"a gather's errors must be a list, got {_show(errors)}")
    failed: dict[int, list[Any]] = {}
    for entry in errors:
        if type(entry) is not list or len(entry) != 6:
            raise ProtocolViolation(f"a gather's error has 6 fields, got {_show(entry)}")
        at = entry[0]
        if not _is_int(at) or not 0 <= at < len(values) or at in failed:
            raise ProtocolViolation(f"a gather's error names call {_show(at)} of {len(values)}")
        failed[at] = check_error([ERR, rid, *entry[1:5], None, entry[5]], rid)
    return values, failed, last


def check_ready(msg: Any, hooks: Sequence[str]) -> dict[str, dict[str, bool]]:
    """The implementations' ordering options from a well-formed READY; else :class:`ProtocolViolation`.

    A load error (``[ERR, 0, "load", ...]``) is returned to the caller as the
    frame itself would be: check for it first with :func:`is_load_error`.
    """
    if type(msg) is not list or len(msg) != 2 or msg[0] != READY or type(msg[1]) is not dict:
        raise ProtocolViolation(f"expected READY, got {_show(msg)}")
    impls = msg[1].get(IMPLS)
    if type(impls) is not dict:
        raise ProtocolViolation(f"READY's {IMPLS} must be a map, got {_show(impls)}")
    options: dict[str, dict[str, bool]] = {}
    for hook, opts in impls.items():
        if hook not in hooks or type(opts) is not dict:
            raise ProtocolViolation(f"READY names an undeclared hook or bad options: {_show(hook)}")
        options[hook] = {k: opts.get(k) is True for k in ("tryfirst", "trylast")}
    return options


def is_load_error(msg: Any) -> bool:
    """Whether ``msg`` is the handshake's load error (checked in full by :func:`check_error`)."""
    return type(msg) is list and len(msg) == 8 and msg[0] == ERR and msg[2] == LOAD
