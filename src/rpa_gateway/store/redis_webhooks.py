"""Webhook endpoints and deliveries in Redis, shared by every replica.

Every key carries the hash tag ``{wh}``: in a cluster they share one slot, so each step
below is one script there too.  ``<p>`` is ``<prefix>:{wh}:``.

    <p>ep              hash: webhook id -> the endpoint (JSON, written by Python only)
    <p>owner:<owner>   set: the owner's webhook ids
    <p>failing         hash: webhook id -> since when every attempt to it failed
    <p>disabled        hash: webhook id -> why the service disabled it
    <p>d               hash: delivery id -> the delivery (JSON, without its body)
    <p>body            hash: delivery id -> the body, fixed at the first attempt, while pending
    <p>due:<webhook>   sorted set: its pending, unclaimed deliveries by next attempt
    <p>ready           sorted set: webhook ids by (about) their first due delivery; a hint a
                       claim corrects for every endpoint it looks at
    <p>claims          sorted set: ``<webhook> <delivery>`` by the end of the claim's lease
    <p>held            hash: webhook id -> deliveries claimed for it now
    <p>hist:<webhook>  sorted set: its deliveries by creation (for the list)
    <p>failed:<webhook> sorted set: its failed deliveries by creation (for recover)
    <p>done            sorted set: ``<webhook> <delivery>`` delivered or failed, by creation
    <p>pending         counter: deliveries pending, all endpoints together

A terminal event's deliveries are written by :data:`FANOUT_LUA`: on one server inside the
script that stores the event (the execution store embeds it); in a cluster, which cannot
span slots in one script, right after it, with the execution still in the unfinished
index until that worked, so the index's sweep fans out what a crash left.  A delivery's
id is derived from (execution, event, webhook): writing it twice writes it once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

from rpa_gateway.webhooks.model import Delivery, DeliveryStatus, Endpoint
from rpa_gateway.webhooks.store import DeliveryBusy, TooManyEndpoints

# (what, script, keys, args) -> the script's reply, Redis errors as StoreError.
ScriptCall = Callable[[str, str, Sequence[str], Sequence[str | bytes]], Awaitable[Any]]

_PAGE = 200
_READY_LOOKED_AT = 1000  # endpoints one claim looks at, at most

# fanout(p, owner, project, event type, execution id, event time, now): a delivery of the
# event to each of the owner's enabled endpoints that want it.  The record is written as
# text (Lua's JSON encoder would round the times).
FANOUT_LUA = """
local function fanout(p, owner, project, event, execution_id, event_at, now)
  for _, wid in ipairs(redis.call('SMEMBERS', p .. 'owner:' .. owner)) do
    local raw = redis.call('HGET', p .. 'ep', wid)
    if raw and redis.call('HEXISTS', p .. 'disabled', wid) == 0 then
      local ep = cjson.decode(raw)
      local wanted = false
      for _, kind in ipairs(ep.events) do
        if kind == event then wanted = true end
      end
      if ep.enabled and wanted and (ep.project_id == cjson.null or ep.project_id == project) then
        local did = 'msg_' .. string.sub(
          redis.sha1hex(execution_id .. ' ' .. event .. ' ' .. wid), 1, 32)
        local record = '{"id":"' .. did .. '","webhook_id":' .. cjson.encode(wid)
          .. ',"execution_id":' .. cjson.encode(execution_id)
          .. ',"event_type":' .. cjson.encode(event) .. ',"event_at":' .. event_at
          .. ',"status":"pending","created_at":' .. now .. ',"attempts":0'
          .. ',"next_attempt_at":' .. now .. '}'
        if redis.call('HSETNX', p .. 'd', did, record) == 1 then
          redis.call('ZADD', p .. 'due:' .. wid, now, did)
          redis.call('ZADD', p .. 'ready', 'LT', now, wid)
          redis.call('ZADD', p .. 'hist:' .. wid, now, did)
          redis.call('INCR', p .. 'pending')
        end
      end
    end
  end
end
"""

_FANOUT = (
    FANOUT_LUA
    + """
fanout(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return 1
"""
)

# The claims of a delivery (member ``<webhook> <delivery>``) end: held count down.
_UNCLAIM_LUA = """
local function unclaim(p, wid, did)
  if redis.call('ZREM', p .. 'claims', wid .. ' ' .. did) == 1 then
    if redis.call('HINCRBY', p .. 'held', wid, -1) <= 0 then
      redis.call('HDEL', p .. 'held', wid)
    end
  end
end
"""

# ARGV: p, now, limit, claim until, per endpoint.  Lapsed claims are due again first (a
# replica that died mid-delivery); then each ready endpoint gives up to its share, less
# what is claimed for it already.  Returns record, body ('' for none) pairs.
_CLAIM = (
    _UNCLAIM_LUA
    + """
local p, now, limit, share = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', p .. 'claims', '-inf', '(' .. now)) do
  local space = string.find(member, ' ', 1, true)
  local wid, did = string.sub(member, 1, space - 1), string.sub(member, space + 1)
  unclaim(p, wid, did)
  redis.call('ZADD', p .. 'due:' .. wid, now, did)
  redis.call('ZADD', p .. 'ready', 'LT', now, wid)
end
local out = {}
local taken = 0
local ready = redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, ARGV[6])
for _, wid in ipairs(ready) do
  if taken >= limit then break end
  local held = tonumber(redis.call('HGET', p .. 'held', wid) or '0')
  local room = math.min(share - held, limit - taken)
  if room > 0 then
    local due = p .. 'due:' .. wid
    for _, did in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, room)) do
      redis.call('ZREM', due, did)
      local record = redis.call('HGET', p .. 'd', did)
      if record and cjson.decode(record).status == 'pending' then
        redis.call('ZADD', p .. 'claims', ARGV[4], wid .. ' ' .. did)
        redis.call('HINCRBY', p .. 'held', wid, 1)
        out[#out + 1] = record
        out[#out + 1] = redis.call('HGET', p .. 'body', did) or ''
        taken = taken + 1
      end
    end
  end
  local first = redis.call('ZRANGE', p .. 'due:' .. wid, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', p .. 'ready', wid)
  else
    redis.call('ZADD', p .. 'ready', first[2], wid)
  end
end
return out
"""
)

# A delivery written back.  ARGV: p, id, webhook, record, status, next attempt, created,
# body ('' none), unless-claimed-at ('' : whatever its claim), endpoint ok ('1').
# Returns 1; 0 when it is not that webhook's; -1 while claimed (ARGV[9] given).
_PUT = (
    _UNCLAIM_LUA
    + """
local p, did, wid = ARGV[1], ARGV[2], ARGV[3]
if ARGV[9] ~= '' then
  local claim = redis.call('ZSCORE', p .. 'claims', wid .. ' ' .. did)
  if claim and tonumber(claim) >= tonumber(ARGV[9]) then return -1 end
end
local was = redis.call('HGET', p .. 'd', did)
if not was then return 0 end
local old = cjson.decode(was)
if old.webhook_id ~= wid then return 0 end
unclaim(p, wid, did)
redis.call('HSET', p .. 'd', did, ARGV[4])
if ARGV[5] == 'pending' then
  redis.call('ZADD', p .. 'due:' .. wid, ARGV[6], did)
  redis.call('ZADD', p .. 'ready', 'LT', ARGV[6], wid)
  redis.call('ZREM', p .. 'done', wid .. ' ' .. did)
  redis.call('ZREM', p .. 'failed:' .. wid, did)
  if ARGV[8] ~= '' then redis.call('HSET', p .. 'body', did, ARGV[8]) end
  if old.status ~= 'pending' then redis.call('INCR', p .. 'pending') end
else
  redis.call('ZREM', p .. 'due:' .. wid, did)
  redis.call('HDEL', p .. 'body', did)
  redis.call('ZADD', p .. 'done', ARGV[7], wid .. ' ' .. did)
  if ARGV[5] == 'failed' then redis.call('ZADD', p .. 'failed:' .. wid, ARGV[7], did) end
  if old.status == 'pending' then redis.call('DECR', p .. 'pending') end
end
if ARGV[10] == '1' then redis.call('HDEL', p .. 'failing', wid) end
return 1
"""
)

# A delivery made outside an event's fan-out (webhook.test).  ARGV: p, id, webhook,
# record, next attempt, created.
_ADD = """
local p, did, wid = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HSETNX', p .. 'd', did, ARGV[4]) == 0 then return 0 end
redis.call('ZADD', p .. 'due:' .. wid, ARGV[5], did)
redis.call('ZADD', p .. 'ready', 'LT', ARGV[5], wid)
redis.call('ZADD', p .. 'hist:' .. wid, ARGV[6], did)
redis.call('INCR', p .. 'pending')
return 1
"""

# ARGV: p, id, owner, endpoint, limit.
_ADD_ENDPOINT = """
local p = ARGV[1]
if redis.call('SCARD', p .. 'owner:' .. ARGV[3]) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', p .. 'ep', ARGV[2], ARGV[4])
redis.call('SADD', p .. 'owner:' .. ARGV[3], ARGV[2])
return 1
"""

# ARGV: p, id, endpoint, re-enabled ('1': the service's disabling and failure record go).
_UPDATE_ENDPOINT = """
local p = ARGV[1]
if redis.call('HEXISTS', p .. 'ep', ARGV[2]) == 0 then return 0 end
redis.call('HSET', p .. 'ep', ARGV[2], ARGV[3])
if ARGV[4] == '1' then
  redis.call('HDEL', p .. 'failing', ARGV[2])
  redis.call('HDEL', p .. 'disabled', ARGV[2])
end
return 1
"""

# ARGV: p, id.  The endpoint goes; its pending deliveries (returned) are failed after.  It
# stays in the ready set: whatever a failure leaves of them is claimed, and the attempt
# finding the endpoint gone fails it.
_REMOVE_ENDPOINT = """
local p, wid = ARGV[1], ARGV[2]
local raw = redis.call('HGET', p .. 'ep', wid)
if not raw then return false end
redis.call('HDEL', p .. 'ep', wid)
redis.call('SREM', p .. 'owner:' .. cjson.decode(raw).owner, wid)
redis.call('HDEL', p .. 'failing', wid)
redis.call('HDEL', p .. 'disabled', wid)
return redis.call('ZRANGE', p .. 'due:' .. wid, 0, -1)
"""

# ARGV: p, then ids: for each, the endpoint, since when it fails, why it was disabled.
_READ_ENDPOINTS = """
local p = ARGV[1]
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('HKEYS', p .. 'ep') end
local out = {}
for _, wid in ipairs(ids) do
  local raw = redis.call('HGET', p .. 'ep', wid)
  if raw then
    out[#out + 1] = raw
    out[#out + 1] = redis.call('HGET', p .. 'failing', wid) or ''
    out[#out + 1] = redis.call('HGET', p .. 'disabled', wid) or ''
  end
end
return out
"""

_OWNER_ENDPOINTS = """
local ids = redis.call('SMEMBERS', ARGV[1] .. 'owner:' .. ARGV[2])
return ids
"""

# ARGV: p, id, now.  Since when the endpoint fails (false: it is gone).
_ENDPOINT_FAILED = """
local p, wid = ARGV[1], ARGV[2]
if redis.call('HEXISTS', p .. 'ep', wid) == 0 then return false end
redis.call('HSETNX', p .. 'failing', wid, ARGV[3])
return redis.call('HGET', p .. 'failing', wid)
"""

_DISABLE_ENDPOINT = """
if redis.call('HEXISTS', ARGV[1] .. 'ep', ARGV[2]) == 0 then return 0 end
redis.call('HSET', ARGV[1] .. 'disabled', ARGV[2], ARGV[3])
return 1
"""

# ARGV: p, now.  When the first unclaimed delivery falls due, or a claim lapses.
_NEXT_DUE = """
local p = ARGV[1]
local ready = redis.call('ZRANGE', p .. 'ready', 0, 0, 'WITHSCORES')
local lapse = redis.call('ZRANGE', p .. 'claims', 0, 0, 'WITHSCORES')
local best = false
if #ready > 0 then best = ready[2] end
if #lapse > 0 and (not best or tonumber(lapse[2]) < tonumber(best)) then best = lapse[2] end
return best
"""

_READ_DELIVERIES = """
local out = {}
for i = 2, #ARGV do out[#out + 1] = redis.call('HGET', ARGV[1] .. 'd', ARGV[i]) or '' end
return out
"""

# ARGV: p, key suffix, max score (inclusive), count, offset: ids newest first.
_NEWEST = """
return redis.call('ZRANGE', ARGV[1] .. ARGV[2], ARGV[3], '-inf', 'BYSCORE', 'REV',
  'LIMIT', ARGV[5], ARGV[4])
"""

# ARGV: p, key suffix, min score: ids from then on.
_SINCE = """
return redis.call('ZRANGE', ARGV[1] .. ARGV[2], ARGV[3], '+inf', 'BYSCORE')
"""

# ARGV: p, created before, batch.
_PURGE = """
local p = ARGV[1]
local members = redis.call('ZRANGE', p .. 'done', '-inf', '(' .. ARGV[2], 'BYSCORE',
  'LIMIT', 0, ARGV[3])
for _, member in ipairs(members) do
  local space = string.find(member, ' ', 1, true)
  local wid, did = string.sub(member, 1, space - 1), string.sub(member, space + 1)
  local raw = redis.call('HGET', p .. 'd', did)
  if not raw or cjson.decode(raw).status ~= 'pending' then
    redis.call('HDEL', p .. 'd', did)
    redis.call('HDEL', p .. 'body', did)
    redis.call('ZREM', p .. 'hist:' .. wid, did)
    redis.call('ZREM', p .. 'failed:' .. wid, did)
  end
  redis.call('ZREM', p .. 'done', member)
end
return #members
"""

_DEPTH = """
return tonumber(redis.call('GET', ARGV[1] .. 'pending') or '0')
"""


def webhook_keys(prefix: str) -> str:
    """The head of every webhook key (``<p>`` above)."""
    return f"{prefix}:{{wh}}:"


def fan_out_call(
    keys_head: str,
    owner: str,
    project_id: str,
    execution_id: str,
    event_type: str,
    event_at: float,
    now: float,
) -> tuple[str, list[str], list[str]]:
    """(script, keys, args) writing an event's deliveries, where the script that stored
    the event could not (a cluster)."""
    args = [keys_head, owner, project_id, event_type, execution_id, repr(event_at), repr(now)]
    return _FANOUT, [keys_head + "ep"], args


class RedisWebhooks:
    """The WebhookStore of a Redis store (its connections, its error handling)."""

    def __init__(self, call: ScriptCall, prefix: str) -> None:
        self._call = call
        self._p = webhook_keys(prefix)
        self._slot = self._p + "ep"  # a key in the slot: routes a script in a cluster

    async def _run(self, what: str, script: str, *args: str | bytes) -> Any:
        return await self._call(what, script, [self._slot], [self._p, *args])

    async def add_endpoint(self, endpoint: Endpoint, limit: int) -> None:
        added = await self._run(
            "add a webhook",
            _ADD_ENDPOINT,
            endpoint.id,
            endpoint.owner,
            _endpoint_json(endpoint),
            str(limit),
        )
        if not int(added):
            raise TooManyEndpoints(limit)

    async def endpoints(self, owner: str | None) -> list[Endpoint]:
        if owner is None:
            found = await self._read_endpoints([])
        else:
            ids = await self._run("read webhooks", _OWNER_ENDPOINTS, owner)
            found = await self._read_endpoints([_text(i) for i in ids]) if ids else []
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def _read_endpoints(self, ids: Sequence[str]) -> list[Endpoint]:
        rows = await self._run("read webhooks", _READ_ENDPOINTS, *ids)
        return [_endpoint(rows[i], rows[i + 1], rows[i + 2]) for i in range(0, len(rows), 3)]

    async def endpoint(self, webhook_id: str) -> Endpoint | None:
        found = await self._read_endpoints([webhook_id])
        return found[0] if found else None

    async def update_endpoint(self, endpoint: Endpoint, *, reenabled: bool = False) -> None:
        await self._run(
            "update a webhook",
            _UPDATE_ENDPOINT,
            endpoint.id,
            _endpoint_json(endpoint),
            "1" if reenabled else "0",
        )

    async def remove_endpoint(self, webhook_id: str) -> bool:
        pending = await self._run("remove a webhook", _REMOVE_ENDPOINT, webhook_id)
        if pending is None:
            return False
        # Claimed ones are failed by their attempt, which finds the endpoint gone.
        for delivery in await self._deliveries([_text(i) for i in pending]):
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
            delivery.last_error = "the endpoint was removed"
            await self._put("remove a webhook", delivery)
        return True

    async def endpoint_failed(self, webhook_id: str, now: float) -> float | None:
        since = await self._run("record a failed delivery", _ENDPOINT_FAILED, webhook_id, repr(now))
        return float(_text(since)) if since is not None else None

    async def disable_endpoint(self, webhook_id: str, reason: str) -> None:
        await self._run("disable a webhook", _DISABLE_ENDPOINT, webhook_id, reason)

    async def add_delivery(self, delivery: Delivery) -> None:
        due = delivery.next_attempt_at if delivery.next_attempt_at is not None else 0.0
        await self._run(
            "add a delivery",
            _ADD,
            delivery.id,
            delivery.webhook_id,
            _delivery_json(delivery),
            repr(due),
            repr(delivery.created_at),
        )

    async def next_due(self, now: float) -> float | None:
        due = await self._run("read deliveries", _NEXT_DUE, repr(now))
        return float(_text(due)) if due is not None else None

    async def claim_due(
        self, holder: str, now: float, limit: int, lease_seconds: float, per_endpoint: int
    ) -> list[Delivery]:
        rows = await self._run(
            "claim deliveries",
            _CLAIM,
            repr(now),
            str(limit),
            repr(now + lease_seconds),
            str(per_endpoint),
            str(_READY_LOOKED_AT),
        )
        return [_delivery(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]

    async def release_claims(self) -> int:
        # Other replicas may hold claims right now: a dead one's lapse with their lease.
        return 0

    async def save_delivery(self, delivery: Delivery, *, endpoint_ok: bool = False) -> None:
        await self._put("record a delivery", delivery, endpoint_ok=endpoint_ok)

    async def _put(
        self,
        what: str,
        delivery: Delivery,
        *,
        endpoint_ok: bool = False,
        unless_claimed_at: float | None = None,
    ) -> int:
        pending = delivery.status is DeliveryStatus.PENDING
        due = delivery.next_attempt_at if delivery.next_attempt_at is not None else 0.0
        body = delivery.body if pending and delivery.body is not None else b""
        return int(
            await self._run(
                what,
                _PUT,
                delivery.id,
                delivery.webhook_id,
                _delivery_json(delivery),
                delivery.status.value,
                repr(due),
                repr(delivery.created_at),
                body,
                repr(unless_claimed_at) if unless_claimed_at is not None else "",
                "1" if endpoint_ok else "0",
            )
        )

    async def delivery(self, delivery_id: str) -> Delivery | None:
        found = await self._deliveries([delivery_id])
        return found[0] if found else None

    async def _deliveries(self, ids: Sequence[str]) -> list[Delivery]:
        if not ids:
            return []
        rows = await self._run("read deliveries", _READ_DELIVERIES, *ids)
        return [_delivery(row, b"") for row in rows if row]

    async def deliveries(
        self,
        webhook_id: str,
        status: DeliveryStatus | None,
        before: tuple[float, str] | None,
        limit: int,
    ) -> list[Delivery]:
        index = f"failed:{webhook_id}" if status is DeliveryStatus.FAILED else f"hist:{webhook_id}"
        top = repr(before[0]) if before is not None else "+inf"
        found: list[Delivery] = []
        offset = 0
        while len(found) < limit:
            ids = await self._run("read deliveries", _NEWEST, index, top, str(_PAGE), str(offset))
            page = await self._deliveries([_text(i) for i in ids])
            # Newest first, ties by id, after the cursor (the index's ties come by member).
            page.sort(key=lambda d: (d.created_at, d.id), reverse=True)
            for delivery in page:
                if before is not None and (delivery.created_at, delivery.id) >= before:
                    continue
                if status is None or delivery.status is status:
                    found.append(delivery)
            if len(ids) < _PAGE:
                break
            offset += len(ids)
        return found[:limit]

    async def requeue(self, webhook_id: str, delivery_id: str, now: float) -> Delivery | None:
        delivery = await self.delivery(delivery_id)
        if delivery is None or delivery.webhook_id != webhook_id:
            return None
        _restart(delivery, now)
        put = await self._put("retry a delivery", delivery, unless_claimed_at=now)
        if put < 0:
            raise DeliveryBusy(delivery_id)
        return delivery if put else None

    async def recover(self, webhook_id: str, since: float, now: float) -> int:
        ids = await self._run("read deliveries", _SINCE, f"failed:{webhook_id}", repr(since))
        recovered = 0
        for delivery in await self._deliveries([_text(i) for i in ids]):
            if delivery.status is not DeliveryStatus.FAILED:
                continue
            _restart(delivery, now)
            if await self._put("recover deliveries", delivery, unless_claimed_at=now) > 0:
                recovered += 1
        return recovered

    async def purge(self, before: float, batch: int) -> int:
        return int(await self._run("purge deliveries", _PURGE, repr(before), str(batch)))

    async def outbox_depth(self) -> int:
        return int(await self._run("count deliveries", _DEPTH))


def _restart(delivery: Delivery, now: float) -> None:
    """Pending from now, the retry schedule from its start."""
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _endpoint_json(endpoint: Endpoint) -> str:
    fields = asdict(endpoint)
    # Kept apart, so the service's writes never race a caller's PATCH.
    del fields["failing_since"], fields["disabled_reason"]
    fields["events"] = list(endpoint.events)
    return json.dumps(fields)


def _endpoint(raw: object, failing: object, disabled: object) -> Endpoint:
    fields = json.loads(_text(raw))
    fields["events"] = tuple(fields["events"])
    reason = _text(disabled)
    if reason:
        fields["enabled"] = False
    return Endpoint(
        **fields,
        failing_since=float(_text(failing)) if _text(failing) else None,
        disabled_reason=reason or None,
    )


def _delivery_json(delivery: Delivery) -> str:
    fields = asdict(delivery)
    del fields["body"]
    return json.dumps(fields)


def _delivery(raw: object, body: object) -> Delivery:
    fields = json.loads(_text(raw))
    fields["status"] = DeliveryStatus(fields["status"])
    stored = body if isinstance(body, bytes) else _text(body).encode()
    return Delivery(**fields, body=stored or None)
