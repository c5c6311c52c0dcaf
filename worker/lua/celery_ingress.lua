-- snapworker celery_ingress (docs/celery.md, docs/producers.md "Celery"): move messages
-- from kombu's lists into the streams, each RPOP and XADD in the same script so that no
-- crash can lose one between the two. Polled by worker/celery.c (1 ms doubling to 50 ms
-- when idle).
--
-- KEYS[1] {ns}:{Q}:stream:high   KEYS[2] {ns}:{Q}:stream   KEYS[3] {ns}:{Q}:stream:low
-- KEYS[4..] kombu lists in pop order (lowest priority step first)
-- ARGV[1] at most this many messages   ARGV[2] size limit in bytes
-- ARGV[3] bytes kept of an oversize message
-- ARGV[4] one character per list, the stream it feeds: '0' high, '1' default, '2' low
--         (the step's position among the steps, in thirds: docs/celery.md); a missing
--         character means default
--
-- A message becomes a `celery` field (kombu LPUSHes, so RPOP takes the oldest). One over
-- the size limit is not copied whole (every reader would have to hold it): its first
-- ARGV[3] bytes go as `celery_oversize`, with `bytes` (its size) and `task_id` (by the
-- rule of celery_scan_task_id in worker/celery_msg.c: the first "id" string after
-- "headers", else "correlation_id"; '' when none), so the worker can still answer
-- FAILURE and keep a dead entry.
--
-- Reply: the number of messages moved.
-- Error: "ERR celery_ingress: ..." with fewer than 3 KEYS, 3-4 ARGV, or a route longer
--        than the lists (nothing moved).
if #KEYS < 3 or #ARGV < 3 or #ARGV > 4 or #(ARGV[4] or '') > #KEYS - 3 then
  return redis.error_reply('ERR celery_ingress: expected 3 streams + one KEY per route character and 3-4 ARGV, got ' ..
    #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local moved, max = 0, tonumber(ARGV[1])
local limit, keep, route = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] or ''
local function task_id(m)
  local id
  local h = string.find(m, '"headers"', 1, true)
  if h then id = string.match(m, '"id"%s*:%s*"([%w_.:%-]+)"', h) end
  if not id then id = string.match(m, '"correlation_id"%s*:%s*"([%w_.:%-]+)"') end
  if id and #id <= 128 then return id end
  return ''
end
for i = 4, #KEYS do
  local sk = KEYS[1 + (tonumber(string.sub(route, i - 3, i - 3)) or 1)]
  while moved < max do
    local m = redis.call('RPOP', KEYS[i])
    if not m then break end
    if #m > limit then
      redis.call('XADD', sk, '*', 'celery_oversize', string.sub(m, 1, keep),
        'bytes', tostring(#m), 'task_id', task_id(m))
    else
      redis.call('XADD', sk, '*', 'celery', m)
    end
    moved = moved + 1
  end
  if moved >= max then break end
end
return moved
