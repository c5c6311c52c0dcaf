-- snapworker cancel (docs/producers.md): stop one job, whatever its state.
-- Used by `snapworker cancel ID` (embedded at build time) and shipped in
-- clients/python/snapworker/lua/cancel.lua; any language can EVAL it (docs/producers.md).
--
-- KEYS[1]  {ns}:{Q}:job:<id>      job hash (must end with ":job:" .. ARGV[1])
-- KEYS[2]  {ns}:{Q}:delayed       KEYS[3] {ns}:{Q}:events
-- KEYS[4]  {ns}:{Q}:stream:high   KEYS[5] {ns}:{Q}:stream   KEYS[6] {ns}:{Q}:stream:low
-- ARGV[1]  job id   ARGV[2] job TTL in seconds (the worker's SNAPWORKER_JOB_TTL_S, 86400)
--
-- running   the hash gets `cancel` = 1; the worker polls that field every second for
--           the jobs it runs (and at every lease renewal), the job stops at its next
--           checkpoint, undoes its work as on a failure and ends `cancelled`
--           (event, hash, Celery REVOKED) — reply "cancelling".
-- queued, retrying, delayed, or unknown (a raw XADD not read yet)
--           ends `cancelled` here: hash (with the TTL), a `cancelled` event; the stream
--           entry the enqueue script added is deleted and the delayed member removed (a
--           Celery task's member is left for the worker to drop when due, so it can write
--           REVOKED); any copy the worker reads later is acked unrun — reply "cancelled".
-- ended     nothing changes — reply "ended".
-- Reply: {result, previous status ("unknown" when there was no hash)}.
-- Errors: "ERR invalid job id"; "ERR cancel: expected 6 KEYS and 2 ARGV ..." (nothing written).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nows = string.format('%d', now)
if #KEYS ~= 6 or #ARGV ~= 2 then
  return redis.error_reply('ERR cancel: expected 6 KEYS and 2 ARGV, got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local id, ttl = ARGV[1], ARGV[2]
if type(id) ~= 'string' or #id < 1 or #id > 128 or not string.match(id, '^[%w_.:%-]+$') then
  return redis.error_reply('ERR invalid job id')
end
local hk = KEYS[1]
if string.sub(hk, -(#id + 5)) ~= ':job:' .. id then return redis.error_reply('ERR KEYS[1] is not the job hash of this id') end
local r = redis.call('HGETALL', hk)
local h = {}
for j = 1, #r, 2 do h[r[j]] = r[j + 1] end
local st = h.status
if st == 'succeeded' or st == 'dead' or st == 'cancelled' then return {'ended', st} end
if st == 'running' then
  redis.call('HSET', hk, 'cancel', '1', 'cancel_ms', nows)
  return {'cancelling', st}
end
-- not started: remove what waits, then end it here
if h.due_ms then
  local ms = redis.call('ZRANGEBYSCORE', KEYS[2], h.due_ms, h.due_ms)
  for _, m in ipairs(ms) do
    if string.find(m, id, 1, true) then
      local ok, p = pcall(cjson.decode, m)
      if ok and type(p) == 'table' and p.id == id and p.origin ~= 'celery' then
        redis.call('ZREM', KEYS[2], m)
      end
    end
  end
end
if h.entry and st == 'queued' then
  local sk = KEYS[5]
  if h.stream == 'high' then sk = KEYS[4] elseif h.stream == 'low' then sk = KEYS[6] end
  redis.call('XDEL', sk, h.entry)
end
local data = '{"code":"cancelled","message":"cancelled before it started","retryable":false}'
local typ, attempt = h.type or '', h.attempt or '0'
redis.call('HSET', hk, 'status', 'cancelled', 'type', typ, 'attempt', attempt, 'error', data,
  'updated_ms', nows)
redis.call('HDEL', hk, 'due_ms', 'entry')
redis.call('EXPIRE', hk, ttl)
redis.call('XADD', KEYS[3], '*', 'job_id', id, 'type', typ, 'status', 'cancelled',
  'attempt', attempt, 'data', data, 'worker', '', 'ts', nows)
if redis.call('PUBSUB', 'NUMSUB', KEYS[3])[2] + redis.call('PUBSUB', 'NUMPAT') > 0 then
  redis.call('PUBLISH', KEYS[3], '{"job_id":"' .. id .. '","type":"' .. typ ..
    '","status":"cancelled","attempt":' .. attempt .. ',"data":' .. data ..
    ',"worker":"","ts":' .. nows .. '}')
end
return {'cancelled', st or 'unknown'}
