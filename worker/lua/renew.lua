-- snapworker renew (docs/queue.md "Leases"): extend the leases of the jobs this worker
-- runs. Run every lease/3 by worker/sched.c, up to 256 jobs per call.
-- prelude: worker/lua/prelude.lua
--
-- per job i:  KEYS[3i-2] job hash  KEYS[3i-1] session lock  KEYS[3i] the entry's stream
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] lease_ms  ARGV[4] n,
--         then per job: entry, id, uselock ("1"/"0")
--
-- A job is renewed when its hash still names this worker and entry with status running,
-- the entry is still pending for this consumer (XCLAIM ... JUSTID: no delivery-count
-- bump; a replica that took it over and acked it makes this fail) and, with uselock,
-- the session lock is ours (re-taken when it lapsed and nobody holds it).
--
-- Reply: per job 1 renewed, 0 lost (the worker stops it), 2 renewed and a cancel was
--        asked (field `cancel`, worker/lua/cancel.lua).
-- Error: "ERR renew: ..." when KEYS/ARGV do not match n (nothing written).
local group, me, lease, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not n or #KEYS ~= 3 * n or #ARGV ~= 4 + 3 * n then
  return redis.error_reply('ERR renew: expected 3n KEYS and 4+3n ARGV for n=' .. tostring(ARGV[4]) ..
    ', got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local until_s = int(now + lease)
local out = {}
for i = 1, n do
  local entry, id, uselock = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  local hk, lk, sk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local h = redis.call('HMGET', hk, 'worker', 'entry', 'status', 'cancel')
  out[i] = 0
  if h[1] == me and h[2] == entry and h[3] == 'running' then
    -- the entry must still be pending (not acked by a replica that took over)
    local c = redis.call('XCLAIM', sk, group, me, 0, entry, 'JUSTID')
    -- and the session lock ours: re-take it if it lapsed, else the lease is lost
    local lockok = true
    if uselock == '1' then
      local holder = redis.call('GET', lk)
      if holder == id then redis.call('PEXPIRE', lk, ARGV[3])
      elseif holder or not redis.call('SET', lk, id, 'NX', 'PX', ARGV[3]) then lockok = false end
    end
    if #c > 0 and lockok then
      redis.call('HSET', hk, 'lease_until', until_s)
      out[i] = (h[4] == '1') and 2 or 1
    end
  end
end
return out
