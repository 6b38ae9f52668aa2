"""The Redis store's Lua scripts: each does one step on one execution's keys (one slot,
see redis_keys), atomically, in a cluster too.

The scripts that store an event (APPEND, FINISH) embed :data:`redis_webhooks.FANOUT_LUA`,
which defines ``fanout()``: on one server they write the event's webhook deliveries in
the same step.  The scripts run by their digest (redis_connection.Connection.eval).
"""

from __future__ import annotations

from rpa_gateway.store.redis_webhooks import FANOUT_LUA

# Every script that writes an event also publishes it, so no event is stored unannounced.
# The message is ARGV[2] (its head, from the caller) .. seq .. ',"ev":' .. event .. '}'.
# ARGV[6], ARGV[7]: the lease's holder and milliseconds ('' : no lease taken).  On one
# server (ARGV[8] '1') the indexes KEYS[5..7] are written here too, by score ARGV[9]
# and member ARGV[10] (the id); a cluster cannot, and create() writes them apart.  Each
# script also publishes the execution's change for feeds: channel and message, here ARGV[11],
# ARGV[12] (APPEND: ARGV[4], ARGV[5]; FINISH: ARGV[9], ARGV[10]).  On one server the owner's
# stored bytes KEYS[8] grow by ARGV[13] here too (a cluster counts them apart); then the
# record's pairs.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[8] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[10])
  redis.call('ZADD', KEYS[6], ARGV[9], ARGV[10])
  redis.call('ZADD', KEYS[7], ARGV[9], ARGV[10])
  redis.call('INCRBY', KEYS[8], ARGV[13])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 14))
redis.call('RPUSH', KEYS[2], ARGV[1])
if ARGV[5] == '1' then redis.call('SET', KEYS[3], ARGV[4]) end
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[7]) end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. '1,"ev":' .. ARGV[1] .. '}')
redis.call('PUBLISH', ARGV[11], ARGV[12])
return 1
"""

# Webhooks (APPEND's ARGV[7..13], FINISH's ARGV[13..17]): on one server ('1') the event's
# deliveries are written in the same script (redis_webhooks.FANOUT_LUA), so no crash keeps
# the event without them; a cluster writes them right after (see finish()).
# Fencing (in APPEND, FINISH, SAVE): with a holder given (ARGV[6], ARGV[11], ARGV[1]),
# a write is refused (-1) while another holds the lease (the last key): a process past its
# lease, whose execution another took over, cannot write it any more.
APPEND = (
    FANOUT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  return 0
end
if ARGV[6] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[6] then return -1 end
end
local seq = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_seq', seq, unpack(ARGV, 14))
if ARGV[7] == '1' then
  fanout(ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[13])
end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. seq .. ',"ev":' .. ARGV[1] .. '}')
redis.call('PUBLISH', ARGV[4], ARGV[5])
return seq
"""
)

# ARGV[1]: the terminal event as stored (without the result, which the record holds),
# ARGV[12] as published (with it).  ARGV[4]: retention in milliseconds, '0' to keep the
# execution forever.  ARGV[5]: on one
# server the indexes are tidied here too ('1'; '2' also the idempotency key KEYS[6]): the
# id ARGV[6] leaves KEYS[4] (unfinished), ARGV[7] enters KEYS[5] (finished) at ARGV[8], and
# the owner's stored bytes (the key before the lease) grow by ARGV[18].
FINISH = (
    FANOUT_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  return 0
end
if ARGV[11] ~= '' then
  local holder = redis.call('GET', KEYS[#KEYS])
  if holder and holder ~= ARGV[11] then return -1 end
end
local seq = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_seq', seq, unpack(ARGV, 19))
redis.call('DEL', KEYS[3])
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if ARGV[5] ~= '0' then
  redis.call('INCRBY', KEYS[#KEYS - 1], ARGV[18])
  redis.call('ZREM', KEYS[4], ARGV[6])
  if ARGV[4] ~= '0' then
    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[7])
    if ARGV[5] == '2' then redis.call('PEXPIRE', KEYS[6], ARGV[4]) end
  end
end
if ARGV[13] == '1' then
  fanout(ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[6], ARGV[8], ARGV[8])
end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. seq .. ',"ev":' .. ARGV[12] .. '}')
redis.call('PUBLISH', ARGV[9], ARGV[10])
return seq
"""
)

SAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[1] then return -1 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# A lost execution written back (see RedisStore.restore).  ARGV[1]: how many events it had,
# ARGV[2] the state event standing in for each; ARGV[3] its sealed token ('' for none);
# ARGV[4], ARGV[5] the lease's holder and length (ms); ARGV[6] '1' on one server (the
# indexes KEYS[5..7] here too), ARGV[7] its creation time, ARGV[8] its id; the record's
# fields from ARGV[9].
RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[7], ARGV[7], ARGV[8])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('DEL', KEYS[2])
for _ = 1, tonumber(ARGV[1]) do redis.call('RPUSH', KEYS[2], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
return 1
"""

CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Renewals: KEYS are (lease, record) pairs, one per execution; one code per pair: 0 held
# by another, 1 renewed, 2 renewed and a cancel was requested (request_cancel).  A lease
# that lapsed and nobody claimed is still the holder's to keep.
RENEW = """
local codes = {}
for i = 1, #KEYS, 2 do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    codes[#codes + 1] = 0
  else
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    local cancel = redis.call('HGET', KEYS[i + 1], 'cancel_requested')
    codes[#codes + 1] = cancel == 'true' and 2 or 1
  end
end
return codes
"""

REQUEST_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'cancel_requested', 'true')
return 1
"""

# KEYS[1]: hash of holder -> until when (ms, Redis's clock) it is alive.  Refreshes
# ARGV[1] for ARGV[2] ms; removes and returns the holders that lapsed.
ANNOUNCE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
local gone = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now then gone[#gone + 1] = all[i] end
end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
return gone
"""

# Compare-and-delete; also used to take back an idempotency reservation.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

REPLACE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# The latest event, its number, and the record's outcome (a terminal event's result).
LATEST = """
local n = redis.call('LLEN', KEYS[1])
if n == 0 then return false end
return {n, redis.call('LINDEX', KEYS[1], -1), redis.call('HGET', KEYS[2], 'outcome')}
"""
