"""Running an ``async def`` implementation's coroutine to its result, in a guest.

A worker process runs it on a new event loop (``asyncio`` is imported the
first time, never before).  Where no event loop can be made (the sandbox has
no sockets for one), the coroutine is driven by hand: that serves every
coroutine that awaits only other coroutines (``await asyncio.sleep(0)``
included), and one that waits on a real event gets a clear error.

Guest-safe: the standard library only, and nothing imported at import time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any


async def _probe() -> None:
    pass


_probe_coroutine = _probe()
#: The type of a native coroutine (``types.CoroutineType``, without importing ``types``).
COROUTINE = type(_probe_coroutine)
_probe_coroutine.close()
del _probe_coroutine


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """``coroutine``'s result (or its exception, raised)."""
    try:
        import asyncio

        loop = asyncio.new_event_loop()
    except Exception:  # no event loop here (the sandbox): drive it by hand
        return _drive(coroutine)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    while True:
        try:
            waited = coroutine.send(None)
        except StopIteration as done:
            return done.value
        if waited is not None:  # a future: only an event loop can wait for it
            coroutine.close()
            raise RuntimeError(
                "this async hook waits for an event (a future), and the sandbox has no event loop to wait with;"
                " await only other coroutines here, or run the plugin at 'process'"
            )
