"""The Lua scripts RedisStore runs: each changes one key's value, version and marks atomically.

Per cache key ``k`` in namespace ``ns`` (one Redis Cluster hash tag, so one slot):

    ns:{k}:v    the value (a stamped, encoded payload; see ``RedisStore``)
    ns:{k}:n    the version: INCRed by every set, delete and write hold
    ns:{k}:l    the load lease: a random token, SET NX PX
    ns:{k}:w    the write hold: how many writes of the key are between their drop and
                their end (write-through / write-around), expiring ``write_hold`` after
                the latest one began. While it is above zero no load may cache the key.

A version key expires ``version ttl`` after it was created, so idle keys do not pile
up; that is safe because a load stores only if the version it saw is the version now.

Every script that stores a value takes the namespace's epoch stamp as its last argument
and stores ``stamp .. payload`` (see ``_redis_epoch``), so a write re-sent after a
restart only swaps that argument.
"""

from __future__ import annotations

from typing import Final

# KEYS: value, version. ARGV: payload, px (0 = no expiry), version ttl ms, stamp.
SET: Final = """
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[4] .. ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[4] .. ARGV[1])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: value1, version1, value2, version2, ... ARGV: px, version ttl ms, payload1, ...,
# stamp.
SET_MANY: Final = """
local px = tonumber(ARGV[1])
local stamp = ARGV[#ARGV]
for i = 1, #KEYS, 2 do
  local payload = stamp .. ARGV[2 + (i + 1) / 2]
  if px > 0 then
    redis.call('SET', KEYS[i], payload, 'PX', px)
  else
    redis.call('SET', KEYS[i], payload)
  end
  if redis.call('INCR', KEYS[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  end
end
return 1
"""

# KEYS: value1, version1, ... ARGV: version ttl ms. Returns how many values existed.
DELETE: Final = """
local n = 0
for i = 1, #KEYS, 2 do
  n = n + redis.call('DEL', KEYS[i])
  if redis.call('INCR', KEYS[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
  end
end
return n
"""

# KEYS: value, version, lease, hold. ARGV: token, lease ms, check value ('1'/'0').
# Returns {2, value} (filled), {3, version} (a write is in flight: load, never store),
# {1, version} (lease taken), {0, version} (someone else loads).
BEGIN: Final = """
if ARGV[3] == '1' then
  local val = redis.call('GET', KEYS[1])
  if val then return {2, val} end
end
local ver = redis.call('GET', KEYS[2]) or ''
if (tonumber(redis.call('GET', KEYS[4]) or '0') or 0) > 0 then
  return {3, ver}
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, ver}
end
return {0, ver}
"""

# KEYS: value, version, lease. ARGV: version seen, token ('' = none), store ('1'/'0'),
# payload, px, stamp. Stores only if the version is unchanged; releases our lease.
END: Final = """
local stored = 0
if ARGV[3] == '1' and (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[1], ARGV[6] .. ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[1], ARGV[6] .. ARGV[4])
  end
  stored = 1
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
end
return stored
"""

# KEYS: value1, version1, ... ARGV: px, version seen 1, payload 1, ..., stamp.
# Returns a flag per key.
END_MANY: Final = """
local px = tonumber(ARGV[1])
local stamp = ARGV[#ARGV]
local stored = {}
for i = 1, #KEYS, 2 do
  local j = i + 1
  if (redis.call('GET', KEYS[i + 1]) or '') == ARGV[j] then
    if px > 0 then
      redis.call('SET', KEYS[i], stamp .. ARGV[j + 1], 'PX', px)
    else
      redis.call('SET', KEYS[i], stamp .. ARGV[j + 1])
    end
    stored[#stored + 1] = 1
  else
    stored[#stored + 1] = 0
  end
end
return stored
"""

# KEYS: value, version, hold per key. ARGV: hold ms, version ttl ms.
# Before a write reaches the source: drop the cached value, bump the version (a load in
# flight can no longer store) and count the write in the hold (no load that begins now
# may store). Returns the version each key has now.
HOLD: Final = """
local out = {}
for i = 1, #KEYS, 3 do
  redis.call('DEL', KEYS[i])
  local ver = redis.call('INCR', KEYS[i + 1])
  if ver == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  end
  redis.call('INCR', KEYS[i + 2])
  redis.call('PEXPIRE', KEYS[i + 2], ARGV[1])
  out[#out + 1] = ver
end
return out
"""

# KEYS: value, version, hold per key. ARGV: px, version ttl ms, then per key: the version
# HOLD returned, store ('1'/'0'), payload; then the stamp. After the source write (or its failure):
# leave the hold, then store the value only if no other write of the key began since
# ours (the version is still ours) and none is still in flight; otherwise drop it, so
# two writers that reached the source in either order leave a miss, not the loser's
# value. Returns a flag per key: 1 if its value was stored.
RELEASE: Final = """
local px = tonumber(ARGV[1])
local stamp = ARGV[#ARGV]
local out = {}
for i = 1, #KEYS, 3 do
  local j = 3 + (i - 1) / 3 * 3
  local left = redis.call('DECR', KEYS[i + 2])
  if left <= 0 then
    redis.call('DEL', KEYS[i + 2])
  end
  local mine = (redis.call('GET', KEYS[i + 1]) or '') == ARGV[j]
  local stored = 0
  if ARGV[j + 1] == '1' and mine and left <= 0 then
    if px > 0 then
      redis.call('SET', KEYS[i], stamp .. ARGV[j + 2], 'PX', px)
    else
      redis.call('SET', KEYS[i], stamp .. ARGV[j + 2])
    end
    stored = 1
  else
    redis.call('DEL', KEYS[i])
  end
  if redis.call('INCR', KEYS[i + 1]) == 1 then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  end
  out[#out + 1] = stored
end
return out
"""

# KEYS: value, version. ARGV: version seen, present seen ('1'/'0'), payload,
# px (0 = no expiry, -1 = keep the current one), version ttl ms, stamp. Compare-and-set:
# "present" means a value of this epoch (one from before a restart counts as absent).
CAS: Final = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
local cur = redis.call('GET', KEYS[1])
local here = 0
if cur and string.sub(cur, 1, #ARGV[6]) == ARGV[6] then here = 1 end
if here ~= tonumber(ARGV[2]) then return 0 end
local px = tonumber(ARGV[4])
if px < 0 then
  redis.call('SET', KEYS[1], ARGV[6] .. ARGV[3], 'KEEPTTL')
elseif px > 0 then
  redis.call('SET', KEYS[1], ARGV[6] .. ARGV[3], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[6] .. ARGV[3])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 1
"""

# KEYS: value, version. ARGV: px (0 = no expiry), version ttl ms, payload, stamp.
# Set if absent (a value of another epoch counts as absent).
ADD: Final = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[4]) == ARGV[4] then return 0 end
if tonumber(ARGV[1]) > 0 then
  redis.call('SET', KEYS[1], ARGV[4] .. ARGV[3], 'PX', ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[4] .. ARGV[3])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""
