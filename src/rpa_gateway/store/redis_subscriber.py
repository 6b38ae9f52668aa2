"""One Redis pub/sub connection, read straight by hiredis's parser.

redis-py's ``PubSub`` spends about 100 µs of Python on each message (a coroutine, a
timeout and several parsing layers per ``get_message``): when every replica received
every event, that was about 1 ms of CPU per execution in ``bench/replicas.py``.  Here
the bytes go from the protocol callback to hiredis and each message to the handler in
the same call, a few µs each.  Commands still go through redis-py; this connection only
subscribes, unsubscribes and pings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis

MessageHandler = Callable[[bytes, bytes], None]
"""Called with (channel, data) for each message, in the protocol callback: keep it short."""


class SubscriberError(ConnectionError):
    """The connection failed, was refused, or stopped answering."""


class _Protocol(asyncio.Protocol):
    def __init__(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        self._parser = hiredis.Reader()
        self._transport: asyncio.WriteTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received = 0  # data arrivals so far: the keepalive's sign of life
        self._replies: collections.deque[Any] = collections.deque()
        self._reply_waiter: asyncio.Future[None] | None = None
        self.awaiting_reply = False  # a command's reply (AUTH's) is awaited
        # Per channel, the SUBSCRIBEs sent and not yet confirmed, in order.
        self._unconfirmed: dict[bytes, collections.deque[asyncio.Future[None]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's; a TCP one can write.
        self._transport = cast(asyncio.WriteTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SubscriberError(f"connection closed{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        self.received += 1
        self._parser.feed(data)
        while True:
            try:
                reply = self._parser.gets()
            except hiredis.ProtocolError as exc:
                self._fail(SubscriberError(f"unreadable reply: {exc}"))
                return
            if reply is False:
                return
            kind = reply[0] if isinstance(reply, list) and reply else None
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirmed(reply[1])
            elif kind in (b"pong", b"unsubscribe"):
                pass  # received says enough
            elif isinstance(reply, hiredis.ReplyError) and not self.awaiting_reply:
                # Not a reply awaited (AUTH's): a refused SUBSCRIBE would leave its
                # confirmation pending for ever; start over instead.
                self._fail(SubscriberError(f"Redis refused: {reply}"))
                return
            else:
                self._replies.append(reply)
                if self._reply_waiter is not None and not self._reply_waiter.done():
                    self._reply_waiter.set_result(None)

    def subscribe(self, channels: Sequence[str]) -> list[asyncio.Future[None]]:
        """Sends SUBSCRIBE; one future per channel, done when Redis confirms it."""
        self.send("SUBSCRIBE", *channels)
        loop = asyncio.get_running_loop()
        confirmations = []
        for channel in channels:
            confirmed = loop.create_future()
            self._unconfirmed.setdefault(channel.encode(), collections.deque()).append(confirmed)
            confirmations.append(confirmed)
        return confirmations

    def _confirmed(self, channel: bytes) -> None:
        waiting = self._unconfirmed.get(channel)
        if waiting:
            confirmed = waiting.popleft()
            if not waiting:
                del self._unconfirmed[channel]
            if not confirmed.done():
                confirmed.set_result(None)

    def send(self, *command: str | bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise SubscriberError("connection closed")
        self._transport.write(hiredis.pack_command(command))  # type: ignore[arg-type]  # its stub wants a 1-tuple

    async def reply(self) -> Any:
        """The next reply that is neither a message nor a pong."""
        self.awaiting_reply = True
        try:
            while not self._replies:
                if self.lost.done():
                    self.lost.result()  # raises why
                self._reply_waiter = asyncio.get_running_loop().create_future()
                await asyncio.wait(
                    (self._reply_waiter, self.lost), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            self.awaiting_reply = False
        reply = self._replies.popleft()
        if isinstance(reply, hiredis.ReplyError):
            raise SubscriberError(f"Redis refused: {reply}")
        return reply

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail(SubscriberError("connection closed"))

    def _fail(self, exc: SubscriberError) -> None:
        if not self.lost.done():
            self.lost.set_exception(exc)
            self.lost.exception()  # retrieved: whoever waits re-raises it
        for waiting in self._unconfirmed.values():
            for confirmed in waiting:
                if not confirmed.done():
                    confirmed.set_exception(exc)
                    confirmed.exception()
        self._unconfirmed.clear()
        if self._transport is not None:
            self._transport.abort()


class Subscriber:
    """Use :meth:`open`; then :meth:`subscribe` and :meth:`keep_alive` until it fails."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        password: str | None,
        on_message: MessageHandler,
    ) -> Subscriber:
        """Connected and signed in (bound the wait with ``asyncio.timeout``)."""
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(lambda: _Protocol(on_message), host, port)
        except OSError as exc:
            raise SubscriberError(f"cannot connect to {host}:{port}: {exc.strerror}") from None
        if password:
            try:
                protocol.send("AUTH", password)
                await protocol.reply()
            except BaseException:
                protocol.close()
                raise
        return cls(protocol)

    def subscribe(self, *channels: str) -> asyncio.Future[Any]:
        """Subscribes at once; the result is awaited until Redis has confirmed every
        channel (SubscriberError if the connection fails first)."""
        return asyncio.gather(*self._protocol.subscribe(channels))

    def unsubscribe(self, channel: str) -> None:
        """Best effort: a connection that failed has no subscriptions left anyway."""
        with contextlib.suppress(SubscriberError):
            self._protocol.send("UNSUBSCRIBE", channel)

    @property
    def connected(self) -> bool:
        return not self._protocol.lost.done()

    async def keep_alive(self, idle: float) -> None:
        """Raises SubscriberError when the connection fails: pinged after ``idle`` seconds
        of silence, given up when the ping is not answered within ``idle`` more."""
        pinged = False
        while True:
            heard = self._protocol.received
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle):
                    await asyncio.shield(self._protocol.lost)
            if self._protocol.lost.done():
                self._protocol.lost.result()  # raises why
            if self._protocol.received != heard:
                pinged = False
            elif pinged:
                raise SubscriberError(f"no answer to PING in {idle} s")
            else:
                self._protocol.send("PING")
                pinged = True

    def close(self) -> None:
        self._protocol.close()
