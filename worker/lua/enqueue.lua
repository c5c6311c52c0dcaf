-- snapworker enqueue (docs/contract.md §2, docs/producers.md): add one job, idempotent on its id.
-- The same file is used by `snapworker enqueue` (embedded at build time) and shipped in
-- clients/python/snapworker/lua/enqueue.lua; any language can EVAL it (docs/producers.md).
--
-- KEYS[1]  {ns}:{Q}:job:<id>      job hash (must end with ":job:" .. payload.id)
-- KEYS[2]  {ns}:{Q}:stream:high   KEYS[3] {ns}:{Q}:stream   KEYS[4] {ns}:{Q}:stream:low
-- KEYS[5]  {ns}:{Q}:delayed       zset, score = due ms (Redis TIME)
-- ARGV[1]  the payload JSON (docs/contract.md §2), at most 1 MiB
--
-- The payload is read (cjson), never rewritten: the worker sees exactly what was sent.
-- When the job hash exists (queued, running, retrying, or ended within the job TTL)
-- nothing is added. Otherwise: "priority" picks the stream (high | default | low);
-- "run_at_ms" (absolute, Redis clock) or "delay_ms" in the future parks it in the
-- delayed zset instead; the hash gets status queued (+ entry, stream or due_ms, which
-- the cancel script uses to remove it).
--
-- Reply: {added, status, where}
--   added   1 when the job was added, 0 when its id was already known
--   status  "queued" when added, else the job's current status
--   where   the stream entry id, or "delayed" when parked, or "" when not added
-- Errors: "ERR invalid_payload: <why>"; "ERR enqueue: expected 5 KEYS and 1 ARGV ..."
--         with fewer (nothing written). More are allowed: worker/enqueue.c runs this
--         text behind a fence of its own that reads KEYS[6] and ARGV[2].
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if #KEYS < 5 or #ARGV < 1 then
  return redis.error_reply('ERR enqueue: expected 5 KEYS and 1 ARGV, got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local function bad(why) return redis.error_reply('ERR invalid_payload: ' .. why) end
local raw = ARGV[1]
if not raw or #raw > 1048576 then return bad('payload missing or over 1 MiB') end
local ok, p = pcall(cjson.decode, raw)
if not ok or type(p) ~= 'table' then return bad('payload is not a JSON object') end
local id = p.id
if type(id) ~= 'string' or #id < 1 or #id > 128 or not string.match(id, '^[%w_.:%-]+$') then
  return bad("field 'id' must match [A-Za-z0-9_.:-]{1,128}")
end
local hk = KEYS[1]
if string.sub(hk, -(#id + 5)) ~= ':job:' .. id then return bad('KEYS[1] is not the job hash of this id') end
if type(p.type) ~= 'string' then return bad("missing field 'type'") end
local pri = p.priority
local stream
if pri == nil or pri == cjson.null or pri == 'default' then stream, pri = KEYS[3], 'default'
elseif pri == 'high' then stream = KEYS[2]
elseif pri == 'low' then stream = KEYS[4]
else return bad("field 'priority' must be high, default or low") end
local due = 0
if type(p.run_at_ms) == 'number' then due = p.run_at_ms
elseif type(p.delay_ms) == 'number' and p.delay_ms > 0 then due = now + p.delay_ms end
local st = redis.call('HGET', hk, 'status')
if st then return {0, st, ''} end
local nows = string.format('%d', now)
if due > now then
  local dues = string.format('%d', due)
  redis.call('ZADD', KEYS[5], dues, raw)
  redis.call('HSET', hk, 'status', 'queued', 'type', p.type, 'attempt', '0', 'stream', pri,
    'due_ms', dues, 'enqueued_ms', nows, 'updated_ms', nows)
  return {1, 'queued', 'delayed'}
end
local entry = redis.call('XADD', stream, '*', 'job', raw)
redis.call('HSET', hk, 'status', 'queued', 'type', p.type, 'attempt', '0', 'stream', pri,
  'entry', entry, 'enqueued_ms', nows, 'updated_ms', nows)
return {1, 'queued', entry}
