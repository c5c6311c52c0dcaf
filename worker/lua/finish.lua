-- snapworker finish (docs/queue.md "One job's life"): write the outcomes of a batch of
-- jobs and ack their entries. One call per batch (up to 256 jobs).
-- prelude: worker/lua/prelude.lua
--
-- KEYS[1] {ns}:{Q}:events   KEYS[2] {ns}:{Q}:delayed   KEYS[3] {ns}:{Q}:dead
-- then per job i (base 3i+1):  KEYS[3i+1] job hash  KEYS[3i+2] session lock
--                              KEYS[3i+3] the entry's stream
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] job TTL s  ARGV[4] events_maxlen
-- ARGV[5] dead_maxlen  ARGV[6] n, then per job: entry, id, type, outcome, attempt,
--         data (JSON), uselock ("1"/"0"), and for every outcome but succeeded two more:
--         delay_ms, raw (the canonical payload; "" = use the stream copy)
--
-- outcome (worker/scripts.c scr_outcome_arg, the only place these words are built):
--   succeeded  hash succeeded + result, TTL, event, unlock
--   retry      payload to the delayed zset (due now + delay_ms), hash retrying, `failed` event
--   dead       dead stream entry, hash dead, TTL, `dead` event (after the type's undo)
--   cancel     hash cancelled, TTL, `cancelled` event (worker/lua/cancel.lua asked)
--   release    payload back on its stream with due=0, attempt and deliveries restored
--   reject     a malformed or refused entry: dead stream; the hash ends dead too unless a
--              live lease runs it or it ended
--   defer      park in the delayed zset due now + delay_ms (a Celery ETA), not run
--   defer_at   the same, due at delay_ms (absolute ms, Redis clock: run_at_ms/delay_ms)
-- Every outcome but reject/defer/defer_at is fenced on (worker, entry, status running):
-- a worker that lost its lease gets "lost" and writes nothing. The session lock is
-- released by compare-and-delete even under a live lease (docs/queue.md "Leases").
-- The hash keeps `due_ms` of a parked job so that cancel can find its member.
-- Acks are batched per stream (one XACK and one XDEL each).
--
-- Reply: per job "ok" or "lost".
-- Error: "ERR finish: expected ... (bad argument layout)" when KEYS/ARGV do not match
--        n and the outcomes' strides (checked before anything is written).
local group, me, ttl = ARGV[1], ARGV[2], ARGV[3]
local evmax, deadmax, n = ARGV[4], ARGV[5], tonumber(ARGV[6])
local out, acks, order = {}, {}, {}
local sk
local function ackdel(entry)
  local l = acks[sk]
  if not l then l = {}; acks[sk] = l; order[#order + 1] = sk end
  l[#l + 1] = entry
end
local function payload(raw, entry) if raw ~= '' then return raw end return payload_of(sk, entry) end
local function to_dead(entry, id, data, attempt, p)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', deadmax, '*', 'job', string.sub(p or '', 1, 1048576),
    'job_id', id, 'source_id', entry, 'error', data, 'attempts', attempt, 'worker', me, 'ts', nows)
end
local b = 6
for i = 1, n or 0 do
  if ARGV[b + 4] == 'succeeded' then b = b + 7 else b = b + 9 end
end
if not n or b ~= #ARGV or #KEYS ~= 3 + 3 * n then
  return redis.error_reply('ERR finish: expected 3+3n KEYS and ' .. b .. ' ARGV for n=' .. tostring(ARGV[6]) ..
    ' (bad argument layout), got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
b = 6
local function one(i)
  local entry, id, typ, outcome = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local attempt, data, uselock = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local delay, raw = 0, ''
  if outcome == 'succeeded' then b = b + 7 else
    delay, raw = tonumber(ARGV[b + 8]), ARGV[b + 9]; b = b + 9
  end
  local hk, lk = KEYS[1 + 3 * i], KEYS[2 + 3 * i]
  sk = KEYS[3 + 3 * i]
  if outcome == 'defer' or outcome == 'defer_at' then
    local due = (outcome == 'defer') and (now + delay) or delay
    local dues = int(due)
    if redis.call('EXISTS', hk) == 0 then
      redis.call('HSET', hk, 'status', 'queued', 'type', typ, 'attempt', attempt, 'updated_ms', nows,
        'due_ms', dues)
      redis.call('ZADD', KEYS[2], dues, payload(raw, entry))
    else
      local st = redis.call('HGET', hk, 'status')
      if st ~= 'cancelled' then
        redis.call('HSET', hk, 'due_ms', dues)
        redis.call('ZADD', KEYS[2], dues, payload(raw, entry))
      end
    end
    ackdel(entry); return 'ok'
  end
  if outcome == 'reject' then
    -- a malformed copy never touches a job that runs under a live lease or ended;
    -- any other record (none, queued, retrying, expired) ends dead with it
    local h = (id ~= '') and redis.call('HMGET', hk, 'status', 'lease_until', 'attempt') or {}
    local live = h[1] == 'running' and (tonumber(h[2]) or 0) > now
    local ended = h[1] == 'succeeded' or h[1] == 'dead' or h[1] == 'cancelled'
    if h[3] and tonumber(h[3]) and tonumber(h[3]) > tonumber(attempt) then attempt = h[3] end
    to_dead(entry, id, data, attempt, payload(raw, entry))
    if id ~= '' and not live and not ended then
      redis.call('HSET', hk, 'status', 'dead', 'type', typ, 'attempt', attempt, 'error', data,
        'worker', me, 'entry', entry, 'updated_ms', nows)
      redis.call('EXPIRE', hk, ttl)
      emit(KEYS[1], evmax, id, typ, 'dead', attempt, data, me)
    end
    ackdel(entry); return 'ok'
  end
  local h = redis.call('HMGET', hk, 'worker', 'entry', 'status')
  if h[1] ~= me or h[2] ~= entry or h[3] ~= 'running' then return 'lost' end
  if outcome == 'release' then
    local p = payload(raw, entry)
    -- `due` 0: any delay of the payload was served before it was read
    if p then redis.call('XADD', sk, '*', 'due', '0', 'job', p) end
    local d = tonumber(redis.call('HGET', hk, 'deliveries')) or 1
    redis.call('HSET', hk, 'status', 'queued', 'attempt', int(tonumber(attempt) - 1), 'deliveries',
      int(math.max(0, d - 1)), 'lease_until', '0', 'updated_ms', nows)
    if uselock == '1' then unlock(lk, id) end
    ackdel(entry); return 'ok'
  end
  if outcome == 'succeeded' then
    redis.call('HSET', hk, 'status', 'succeeded', 'result', data, 'updated_ms', nows)
    redis.call('EXPIRE', hk, ttl)
    emit(KEYS[1], evmax, id, typ, 'succeeded', attempt, data, me)
  elseif outcome == 'retry' then
    local p = payload(raw, entry)
    local dues = int(now + delay)
    if p then redis.call('ZADD', KEYS[2], dues, p) end
    redis.call('HSET', hk, 'status', 'retrying', 'error', data, 'updated_ms', nows, 'lease_until', '0',
      'due_ms', dues)
    emit(KEYS[1], evmax, id, typ, 'failed', attempt, data, me)
  elseif outcome == 'cancel' then
    redis.call('HSET', hk, 'status', 'cancelled', 'error', data, 'updated_ms', nows)
    redis.call('EXPIRE', hk, ttl)
    emit(KEYS[1], evmax, id, typ, 'cancelled', attempt, data, me)
  else
    to_dead(entry, id, data, attempt, payload(raw, entry))
    redis.call('HSET', hk, 'status', 'dead', 'error', data, 'updated_ms', nows)
    redis.call('EXPIRE', hk, ttl)
    emit(KEYS[1], evmax, id, typ, 'dead', attempt, data, me)
  end
  if uselock == '1' then unlock(lk, id) end
  ackdel(entry); return 'ok'
end
for i = 1, n do out[i] = one(i) end
for _, s in ipairs(order) do
  redis.call('XACK', s, group, unpack(acks[s])); redis.call('XDEL', s, unpack(acks[s]))
end
return out
