"""A stream relayed from the upstream to the client, and settled whatever the client does.

The upstream's usage is the bill, and it comes last (chat: after the ``finish_reason`` chunk,
just before ``[DONE]``; Responses: in the ``response.completed`` event that ends the stream).
So a client that leaves does not end the upstream call: the gateway stops
sending and keeps reading, within a time and a byte budget (``drain_timeout_s``,
``drain_max_bytes``), until the upstream's body ends; only a stream that does not end within
them is estimated. The status says what the client got: 200 once the relayed end of the
stream (the watcher's ``end_event``: ``[DONE]``, ``response.completed``...) was handed to it
(whatever happens after), 499 if it left before.

A client that stops reading is one that left: a send that the client does not take within
``client_idle_timeout_s`` (the server's write buffer stays full: ASGI's backpressure) ends the
relay as a disconnect does, so a slow reader cannot pin an upstream connection.

A stream the upstream breaks off (an error, a timeout, or an end without its end event) is not
shown as a clean end: the client gets an error event in OpenAI's stream shape
(``data: {"error": {...}}``) and no ``[DONE]``, and the record says 502 (504 for a timeout).

The error event is a parameter: an Anthropic Messages stream (whose watcher ends it at its
``message_stop`` event) carries errors as ``event: error`` (gateway/anthropic.py).

What happens after the read loop (the drain, the record, the counters, releasing the
upstream connection) runs in a task of its own that no cancellation reaches: the client
leaving, or a server giving up on the request, cannot leave a call in the ledger but out of
the key's counters, or a connection out of the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import orjson
from starlette.types import Message, Receive, Send

from tallygate.errors import error_body
from tallygate.gateway.sse import EventTooLong, StreamWatcher
from tallygate.gateway.upstream import UpstreamBusy

log = logging.getLogger("tallygate.gateway")

CLIENT_CLOSED = 499  # nginx's code for "the client went away before the answer"
# Connection refused or reset, a broken stream, a timeout, no free connection to it: the
# upstream's fault (or the gateway's pool's), not the client's.
# An event longer than sse_max_event_bytes is a broken stream too.
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError, UpstreamBusy,
                   EventTooLong)


# A stream's watcher: the settle a relay is given takes the watcher it reads with (a
# Messages stream's settle takes its MessageWatcher).
W = TypeVar("W", bound=StreamWatcher)


@dataclass(frozen=True, slots=True)
class Drain:
    """How much of a stream is still read after its client left (``drain_timeout_s``,
    ``drain_max_bytes``)."""

    timeout_s: float = 30.0
    max_bytes: int = 4 * 1024 * 1024


@dataclass(slots=True)
class StreamProgress:
    """How far a relayed stream got: what its record is made from."""

    reading: bool = True  # in the read loop, where a client leaving interrupts the wait
    gone: bool = False  # the client left
    ended: bool = False  # the upstream's body was read to its end
    delivered: bool = False  # the client got the relayed [DONE] (set once it has left)
    failure: BaseException | None = None  # what broke the stream while the client was there
    ttft_ms: int | None = None
    # An event stream is whole only with its end (chat: [DONE]; the watcher knows its API's);
    # an upstream that answered a stream request with something else (a JSON body) is
    # passed through as it is.
    expects_done: bool = True

    def status(self, watcher: StreamWatcher) -> int:
        if self.gone:
            return 200 if self.delivered else CLIENT_CLOSED
        if self.failure is not None:
            return failure_status(self.failure)
        if self.expects_done and not watcher.saw_done:  # the body ended early
            return 502
        return 200


def failure_status(failure: BaseException) -> int:
    if isinstance(failure, TimeoutError):
        return 504
    return 502 if isinstance(failure, UPSTREAM_ERRORS) else 500


def stream_failure(progress: StreamProgress) -> tuple[int, str, str]:
    """Why a stream is not whole: the status its record gets, a code and a message."""
    failure = progress.failure
    if failure is None:
        code, message = "upstream_incomplete", "The upstream ended the stream before it was " \
                                               "complete."
    elif isinstance(failure, TimeoutError):
        code, message = "upstream_timeout", "The upstream did not answer in time."
    elif isinstance(failure, EventTooLong):
        code, message = "upstream_event_too_long", "The upstream sent an event too long to " \
                                                   "relay; the stream was cut."
    elif isinstance(failure, UPSTREAM_ERRORS):
        code, message = "upstream_error", "The upstream broke off the stream."
    else:
        code, message = "internal_error", "The gateway failed; the failure is logged."
    return (502 if failure is None else failure_status(failure)), code, message


def error_event(progress: StreamProgress) -> bytes:
    """The event that tells a client the stream broke (OpenAI streams carry errors as a
    ``data:`` event with an ``error`` object; the SDKs raise it)."""
    status, code, message = stream_failure(progress)
    return b"data: " + orjson.dumps(error_body(status, message, code)) + b"\n\n"


# What settling a stream does once its status and usage are known: record and count.
Settle = Callable[[int, W, int | None], Awaitable[None]]


async def relay_stream(response: aiohttp.ClientResponse, watcher: W,
                       receive: Receive, send: Send, start: Message, *, started: float,
                       event_stream: bool, strict: bool, drain: Drain, settle: Settle[W],
                       settling: set[asyncio.Task[None]],
                       uploaded: asyncio.Event | None = None, idle_s: float | None = None,
                       error_event: Callable[[StreamProgress], bytes] = error_event) -> None:
    """Pass the upstream's events to the client as they come, then settle the call.
    ``start`` is the ``http.response.start`` message; ``settling`` holds the settling tasks
    still running (one that a server's cancelling of the request left behind is kept there,
    not dropped half-way). ``uploaded``: set once the request body has been read (an upload
    still being passed upstream is read by no one else). ``error_event`` is what a client
    is sent when the stream broke off. ``idle_s``: the longest one send to the client may
    take before the client is taken for gone."""
    progress = StreamProgress(expects_done=event_stream)
    task = asyncio.current_task()
    assert task is not None
    watching = asyncio.create_task(_interrupt_when_gone(receive, progress, task, uploaded))
    held = b""  # strict durability: the last piece waits for the commit
    sending = b""  # the piece being sent, when the client's leaving interrupts it
    tail = b""
    try:
        try:
            # One turn of the loop for the watcher: a client that left while the upstream
            # prepared its answer is known before anything is relayed (a server may take
            # every send after a disconnect without a word, and a fast upstream's whole
            # answer may be read without the loop ever turning).
            await asyncio.sleep(0)
            if not await _sent(send, start, idle_s):
                progress.gone = True  # the client left before the answer began
                raise _ClientLeft
            async for chunk in response.content.iter_any():
                out = watcher.feed(chunk)
                if not out:
                    continue
                if strict:
                    out, held = held, out
                    if not out:
                        continue
                if progress.ttft_ms is None:  # the first bytes the client gets
                    progress.ttft_ms = int((time.perf_counter() - started) * 1000)
                try:
                    await _send_within(send, {"type": "http.response.body", "body": out,
                                              "more_body": True}, idle_s)
                except OSError:  # reported on send (ASGI 2.4), or not read (TimeoutError)
                    sending = out
                    progress.gone = True
                    break
                except asyncio.CancelledError:
                    sending = out
                    raise
            else:
                tail = watcher.finish()
                progress.ended = True
        except _ClientLeft:
            pass
        except asyncio.CancelledError:
            if not progress.gone:  # not ours: the server gave up on the request
                progress.gone = True
                raise
            task.uncancel()  # ours: the client left, and the upstream is read on without it
    except UPSTREAM_ERRORS as exc:
        log.warning("a stream broke off: %s", exc.__class__.__name__)
        progress.failure = exc
    except Exception as exc:
        log.exception("a stream failed in the gateway")
        progress.failure = exc
    finally:
        progress.reading = False
        watching.cancel()
        if progress.gone:  # did the client get the stream's end event before it left?
            end = watcher.end_event
            progress.delivered = end is not None and end not in held + sending
        settled = asyncio.create_task(_settle(response, watcher, progress, drain, settle))
        settling.add(settled)
        settled.add_done_callback(settling.discard)
    await asyncio.shield(settled)
    if progress.gone:
        return
    end = held + tail
    if progress.status(watcher) != 200:
        end += error_event(progress)
    # A client that left meanwhile is told nothing more: the call is settled.
    await _sent(send, {"type": "http.response.body", "body": end, "more_body": False}, idle_s)


class _ClientLeft(Exception):
    """The server said on sending the response's start that the client is gone."""


async def _sent(send: Send, message: Message, idle_s: float | None) -> bool:
    try:
        await _send_within(send, message, idle_s)
    except OSError:  # reported on send (ASGI 2.4), or not read (TimeoutError)
        return False
    return True


async def _send_within(send: Send, message: Message, idle_s: float | None) -> None:
    """``send``, raising :class:`TimeoutError` when the client has not taken it within
    ``idle_s`` (the send waits while the server's buffer to the client is full)."""
    async with asyncio.timeout(idle_s):
        await send(message)


async def _interrupt_when_gone(receive: Receive, progress: StreamProgress,
                               task: asyncio.Task[None],
                               uploaded: asyncio.Event | None) -> None:
    """Interrupts the read loop's wait (on the upstream, which may be long, or on a client
    that reads slowly) when the client disconnects; never what comes after it."""
    if uploaded is not None:
        await uploaded.wait()
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a server whose receive fails: taken for a client that left
        log.exception("cannot watch for the client leaving a stream")
    if progress.reading and not progress.gone:
        progress.gone = True
        task.cancel()


async def _settle(response: aiohttp.ClientResponse, watcher: W,
                  progress: StreamProgress, drain: Drain, settle: Settle[W]) -> None:
    """Drain (if the client left before the end), release the connection, record, count."""
    ended = progress.ended
    try:
        if progress.gone and not ended and progress.failure is None:
            ended = await _drain(response, watcher, drain)
    except Exception:
        log.exception("draining a stream failed")
    finally:
        try:
            if ended:
                response.release()  # read to the end: the connection can be reused
            else:
                response.close()
        except Exception:
            log.exception("releasing an upstream response failed")
    await settle(progress.status(watcher), watcher, progress.ttft_ms)


async def _drain(response: aiohttp.ClientResponse, watcher: StreamWatcher,
                 drain: Drain) -> bool:
    """Read on, sending nothing, until the upstream's body ends or the budget is spent:
    whether it ended."""
    read = 0
    try:
        async with asyncio.timeout(drain.timeout_s):
            async for chunk in response.content.iter_any():
                read += len(chunk)
                if read > drain.max_bytes:
                    log.info("a stream whose client left passed drain_max_bytes (%d) before "
                             "its end: its usage is estimated", drain.max_bytes)
                    return False
                watcher.feed(chunk)
    except TimeoutError:
        log.info("a stream whose client left did not end within drain_timeout_s (%s s): its "
                 "usage is estimated", drain.timeout_s)
        return False
    except UPSTREAM_ERRORS as exc:
        log.info("a stream whose client left broke off: %s", exc.__class__.__name__)
        return False
    watcher.finish()
    return True
