"""The Redis store's live events: what other processes write reaches this process's
subscribers over pub/sub, on one connection (redis_subscriber) rebuilt whenever it fails.

Every script that writes an event publishes it on the execution's channel, which costs
nothing while nobody listens.  This process listens only to executions it follows and
does not write (another process drives them): it subscribes to the channel before
subscribe() returns, so every event written after that reaches the subscription - this
process's at write time, other processes' over pub/sub.  While the pub/sub connection is
down, whatever was missed is made up when it is back (see _resync); so is what was missed
when this process stops writing one.  The same connection carries the notices, the
changes for feeds, and the messages between processes (redis_mcp).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from rpa_gateway.executions import Event, EventKind, Execution
from rpa_gateway.store.base import NoticeListener, StoreError, Subscription
from rpa_gateway.store.hub import ChangeSubscription, Hub
from rpa_gateway.store.redis_codec import dumps, event_from, with_stored_result
from rpa_gateway.store.redis_connection import PAGE, Connection
from rpa_gateway.store.redis_keys import Keys
from rpa_gateway.store.redis_scripts import LATEST
from rpa_gateway.store.redis_subscriber import Subscriber, SubscriberError

log = logging.getLogger(__name__)

_RECONNECT_FIRST = 0.05
_RECONNECT_MAX = 1.0
_PUBSUB_IDLE = 5.0  # seconds without a message before the pub/sub connection is pinged


class Fanout(Hub):
    """The hub, also handing on events other processes wrote: to subscribers only, since
    listeners hear of this process's writes alone."""

    def deliver(self, event: Event) -> None:
        for subscription in self._subscribers.get(event.execution_id, ()):
            subscription.deliver(event)


class LiveEvents:
    """The pub/sub connection, and what this process follows on it."""

    def __init__(self, connection: Connection, keys: Keys, hub: Fanout, origin: str) -> None:
        self._redis = connection
        self._client = connection.client
        self._keys = keys
        self._hub = hub
        self._origin = origin  # tells this store's messages from other processes'
        self._own_messages = f'{{"o":"{origin}"'.encode()
        self._notices_channel = keys.notices_channel.encode()
        self._changes_channel = keys.changes_channel.encode()
        self._messages_head = keys.messages("").encode()
        self._following: Counter[str] = Counter()  # subscriptions per execution
        # Executions whose channel is subscribed (or will be, at the next connection): the
        # SUBSCRIBE's confirmation.
        self._watched: dict[str, asyncio.Future[Any]] = {}
        self._subscriber: Subscriber | None = None
        self._catching_up: set[asyncio.Task[None]] = set()
        self._notice_listeners: list[NoticeListener] = []
        self._listening = asyncio.Event()  # the pub/sub connection is subscribed
        self._lost = False  # the pub/sub connection failed and is not back yet
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The pub/sub connection, subscribed once this returns."""
        self._reader = asyncio.create_task(self._listen_forever(), name="redis-store-events")
        try:
            async with asyncio.timeout(self._redis.timeout):
                await self._listening.wait()
        except TimeoutError:
            raise StoreError("cannot subscribe to Redis events (no answer in time)") from None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    @asynccontextmanager
    async def subscribe(self, execution_id: str, written_here: bool) -> AsyncIterator[Subscription]:
        async with self._hub.subscribe(execution_id) as subscription:
            self._following[execution_id] += 1
            try:
                if not written_here:
                    await self.watch(self._keys.live(execution_id))
                yield subscription
            finally:
                self._following[execution_id] -= 1
                if self._following[execution_id] <= 0:
                    del self._following[execution_id]
                    self.unwatch(self._keys.live(execution_id))

    @asynccontextmanager
    async def subscribe_changes(self, owner: str | None) -> AsyncIterator[ChangeSubscription]:
        try:
            async with self._hub.subscribe_changes(owner) as subscription:
                await self.watch(self._keys.changes_channel)
                yield subscription
        finally:
            if not self._hub.follows_changes:  # the last feed here has closed
                self.unwatch(self._keys.changes_channel)

    def written_elsewhere(self, execution_id: str) -> None:
        channel = self._keys.live(execution_id)
        if not self._following[execution_id] or channel in self._watched:
            return
        confirmed = self._send_watch(channel)
        task = asyncio.get_running_loop().create_task(self._catch_up(execution_id, confirmed))
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    async def _catch_up(self, execution_id: str, confirmed: asyncio.Future[Any]) -> None:
        """Once subscribed, the subscriptions get the latest stored event: those that
        missed some (written before the channel was subscribed) see a gap."""
        with contextlib.suppress(SubscriberError):
            await confirmed
        try:
            await self._resync([execution_id])
        except StoreError as exc:  # Redis is failing: the reconnection resyncs
            log.warning("execution %s: its latest event is not read: %s", execution_id, exc)

    async def watch(self, channel: str) -> None:
        """The channel subscribed (or to be, once the connection is back)."""
        confirmed = self._watched.get(channel) or self._send_watch(channel)
        with contextlib.suppress(SubscriberError):
            await asyncio.shield(confirmed)  # failed: the reconnection subscribes it

    def _send_watch(self, channel: str) -> asyncio.Future[Any]:
        subscriber = self._subscriber
        confirmed: asyncio.Future[Any] | None = None
        if subscriber is not None and subscriber.connected:
            with contextlib.suppress(SubscriberError):  # closing: as if it were down
                confirmed = subscriber.subscribe(channel)
                confirmed.add_done_callback(_retrieve)
        if confirmed is None:  # subscribed (and resynced) when the connection is back
            confirmed = asyncio.get_running_loop().create_future()
            confirmed.set_result(None)
        self._watched[channel] = confirmed
        return confirmed

    def unwatch(self, channel: str) -> None:
        if self._watched.pop(channel, None) is not None and self._subscriber is not None:
            self._subscriber.unsubscribe(channel)

    async def publish_only(self, event: Event, execution: Execution) -> None:
        """This process's subscribers get it even when Redis cannot take the message for
        other processes (StoreError then)."""
        self._hub.publish(event, execution)
        message = dumps(
            {
                "o": self._origin,
                "id": event.execution_id,
                "seq": event.seq,
                "ev": {"kind": event.kind.value, "data": event.data, "at": event.at},
            }
        )
        async with self._redis.call("publish event"):
            await self._client.publish(self._keys.live(event.execution_id), message)

    async def notify(self, topic: str, execution_id: str) -> None:
        """This process's listeners hear it at once, others' over pub/sub (StoreError when
        Redis cannot take it)."""
        for listener in self._notice_listeners:
            listener(topic, execution_id)
        message = dumps({"o": self._origin, "topic": topic, "id": execution_id})
        async with self._redis.call("send notice"):
            await self._client.publish(self._keys.notices_channel, message)

    def add_notice_listener(self, listener: NoticeListener) -> None:
        self._notice_listeners.append(listener)

    async def _listen_forever(self) -> None:
        """The one pub/sub connection, rebuilt with backoff whenever it fails."""
        delay = _RECONNECT_FIRST
        attempt = 0
        addresses = self._redis.addresses
        while True:
            host, port = addresses[attempt % len(addresses)]
            attempt += 1
            try:
                await self._listen(host, port)
            except Exception as exc:  # whatever broke, the reader carries on
                if self._listening.is_set():
                    self._listening.clear()
                    self._lost = True
                    delay = _RECONNECT_FIRST
                    log.warning("Redis events connection lost: %s", self._redis.describe(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)

    async def _listen(self, host: str, port: int) -> None:
        subscriber: Subscriber | None = None
        timeout = self._redis.timeout
        try:
            try:
                async with asyncio.timeout(timeout):
                    subscriber = await Subscriber.open(
                        host, port, password=self._redis.password, on_message=self._dispatch
                    )
                    # From here on, watch() subscribes on this connection itself.
                    self._subscriber = subscriber
                    channels = list(self._watched)
                    await subscriber.subscribe(self._keys.notices_channel, *channels)
            except TimeoutError:
                raise SubscriberError(f"no answer in {timeout} s") from None
            await self._resync(self._keys.followed(channels))
            if self._lost:
                self._lost = False
                # Changes published meanwhile are gone: feeds reconnect and replay them.
                self._hub.end_change_subscriptions()
                log.info("Redis events connection back")
            self._listening.set()
            await subscriber.keep_alive(_PUBSUB_IDLE)
        finally:
            if subscriber is not None:
                subscriber.close()
                if self._subscriber is subscriber:
                    self._subscriber = None

    async def _resync(self, followed: Sequence[str]) -> None:
        """The subscriptions get these executions' latest stored event: one that missed
        events (while the connection was down) sees a gap and reads them from the store."""
        for start in range(0, len(followed), PAGE):
            ids = followed[start : start + PAGE]
            pipe = self._client.pipeline(transaction=False)
            for execution_id in ids:
                keys = [self._keys.events(execution_id), self._keys.record(execution_id)]
                pipe.eval(LATEST, 2, *keys)
            async with self._redis.call("read the latest events"):
                found = await pipe.execute()
            for execution_id, latest in zip(ids, found, strict=True):
                if latest:
                    event = event_from(execution_id, int(latest[0]), latest[1])
                    self._hub.deliver(with_stored_result(event, latest[2]))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if data.startswith(self._own_messages):
            return  # this process delivered it when writing it
        try:
            if channel == self._notices_channel:
                message = json.loads(data)
                for listener in self._notice_listeners:
                    listener(message["topic"], message["id"])
            elif channel == self._changes_channel:
                message = json.loads(data)
                self._hub.deliver_change(message["owner"], message["change"])
            elif channel.startswith(self._messages_head):
                message = json.loads(data)
                name = channel[len(self._messages_head) :].decode()
                self._hub.deliver_message(name, message["m"])
            else:
                self._deliver(data)
        except Exception:
            log.exception("Redis message on %s not handled", channel.decode(errors="replace"))

    def _deliver(self, data: bytes) -> None:
        """An event another process wrote."""
        message = json.loads(data)
        stored = message["ev"]
        event = Event(
            message["id"],
            int(message["seq"]),
            EventKind(stored["kind"]),
            stored["data"],
            float(stored["at"]),
        )
        self._hub.deliver(event)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks a failure seen: the reconnection makes up for a SUBSCRIBE that failed."""
    if not future.cancelled():
        future.exception()
