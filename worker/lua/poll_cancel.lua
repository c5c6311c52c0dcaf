-- snapworker poll_cancel (docs/queue.md "Delays and cancel"): was a cancel asked for the
-- jobs this worker runs or holds read ahead? Sent every second by worker/sched.c, only
-- while jobs are in flight.
--
-- KEYS  job hashes, any number (up to 256)    ARGV  none
-- Reply: per key 1 when its field `cancel` is "1" (worker/lua/cancel.lua), else 0.
local out = {}
for i = 1, #KEYS do out[i] = (redis.call('HGET', KEYS[i], 'cancel') == '1') and 1 or 0 end
return out
