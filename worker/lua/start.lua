-- snapworker start (docs/queue.md "One job's life"): decide, per delivered stream entry,
-- whether this worker runs it. One call per read batch (up to 256 entries).
-- prelude: worker/lua/prelude.lua
--
-- KEYS[1]  {ns}:{Q}:events         KEYS[2] {ns}:{Q}:delayed
-- then per job i (base 3i):  KEYS[3i] job hash  KEYS[3i+1] session lock
--                            KEYS[3i+2] the stream the entry was read from
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] lease_ms  ARGV[4] events_maxlen
-- ARGV[5] busy_delay_ms  ARGV[6] recover ("1": a re-read of our own pending entries)
-- ARGV[7] n, then per job 7 values: entry, id, type, uselock ("1"/"0"), max_deliveries,
--         attempt_base (Celery headers.retries), raw (the canonical payload when the
--         entry holds another form, Celery; else "")
--
-- Per job, by what the job hash says:
--   ended    succeeded | dead: re-emit the terminal event, XACK+XDEL; cancelled
--            (worker/lua/cancel.lua, before it started): XACK+XDEL, no event; our own
--            re-read (recover) of the entry our own finish ended: XACK+XDEL, no event
--   skip     running here or elsewhere under a live lease, same entry: nothing
--   dup      a live lease on another entry, or retrying from another entry: XACK+XDEL
--   busy     the session lock is held by another job: back to the delayed zset
--            (due now + busy_delay_ms), hash queued (+ due_ms), XACK+XDEL; no attempt
--   poison   delivered more than max_deliveries times: marked running, not run
--   run      status running, lease, session lock, a `started` event
--
-- Reply: one flat array (a nested table per job cost ~1 us more per job), per job
--   action, attempt, deliveries, npairs, then npairs (name, value) pairs:
--   run/poison: the memo (m:<name> fields); ended: one pair (terminal status, data).
-- Error: "ERR start: ..." when KEYS/ARGV do not match n (nothing written).
local group, me, lease, leases = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[3]
local evmax, busy, recover, n = ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
if not n or #KEYS ~= 2 + 3 * n or #ARGV ~= 7 + 7 * n then
  return redis.error_reply('ERR start: expected 2+3n KEYS and 7+7n ARGV for n=' .. tostring(ARGV[7]) ..
    ', got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local until_s = int(now + lease)
local out, no = {}, 0
local function put(a, b, c, d) out[no + 1] = a; out[no + 2] = b; out[no + 3] = c; out[no + 4] = d; no = no + 4 end
local function put2(a, b) out[no + 1] = a; out[no + 2] = b; no = no + 2 end
local sk
local function ackdel(entry)
  redis.call('XACK', sk, group, entry); redis.call('XDEL', sk, entry)
end
local function one(i)
  local b = 7 + (i - 1) * 7
  local entry, id, typ, uselock = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local maxdel, base, raw = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), ARGV[b + 7]
  local hk, lk = KEYS[3 * i], KEYS[3 * i + 1]
  sk = KEYS[3 * i + 2]
  local h = hgetall(hk)
  local st = h.status
  local attempt = tonumber(h.attempt) or 0
  local deliveries = tonumber(h.deliveries) or 0
  if st == 'succeeded' or st == 'dead' or st == 'cancelled' then
    local data = (st == 'succeeded') and (h.result or '{}') or (h.error or '{}')
    -- our own re-read that raced our own finish of this very entry (the read ran before
    -- the finish, its reply came after): that finish emitted the event already
    local echo = recover == '1' and h.worker == me and h.entry == entry
    if st ~= 'cancelled' and not echo then
      emit(KEYS[1], evmax, id, h.type or typ, st, h.attempt or '0', data, h.worker or '')
    end
    ackdel(entry); put('ended', attempt, deliveries, 1); put2(st, data); return
  end
  local live = st == 'running' and (tonumber(h.lease_until) or 0) > now
  local mine = h.worker == me and h.entry == entry
  if live and not (recover == '1' and mine) then
    if h.entry == entry then put('skip', attempt, deliveries, 0); return end
    ackdel(entry); put('dup', attempt, deliveries, 0); return
  end
  if st == 'retrying' and h.entry ~= entry then ackdel(entry); put('dup', attempt, deliveries, 0); return end
  if uselock == '1' then
    if not redis.call('SET', lk, id, 'NX', 'PX', leases) then
      if redis.call('GET', lk) ~= id then
        local p = (raw ~= '' and raw) or payload_of(sk, entry)
        local dues = int(now + busy)
        if p then redis.call('ZADD', KEYS[2], dues, p) end
        if not st then
          redis.call('HSET', hk, 'status', 'queued', 'type', typ, 'attempt', ARGV[b + 6], 'updated_ms', nows,
            'due_ms', dues)
        elseif st == 'running' then
          -- reclaimed from a stalled owner but parked: fence that owner out
          redis.call('HSET', hk, 'status', 'queued', 'entry', '', 'worker', '', 'lease_until', '0',
            'updated_ms', nows, 'due_ms', dues)
        else
          redis.call('HSET', hk, 'due_ms', dues)
        end
        ackdel(entry); put('busy', attempt, deliveries, 0); return
      end
      redis.call('PEXPIRE', lk, leases)
    end
  end
  if st == 'running' then
    if not (recover == '1' and mine) then deliveries = deliveries + 1 end
  else
    attempt = math.max(attempt, base) + 1; deliveries = deliveries + 1
  end
  local as = int(attempt)
  redis.call('HSET', hk, 'status', 'running', 'type', typ, 'attempt', as, 'worker', me,
    'entry', entry, 'lease_until', until_s, 'deliveries', int(deliveries), 'updated_ms', nows)
  local act = 'run'
  if deliveries > maxdel then act = 'poison' else
    emit(KEYS[1], evmax, id, typ, 'started', as, '{}', me)
  end
  if h == NONE then put(act, attempt, deliveries, 0); return end
  local memo = {}
  for k, v in pairs(h) do
    if string.sub(k, 1, 2) == 'm:' then memo[#memo + 1] = string.sub(k, 3); memo[#memo + 1] = v end
  end
  put(act, attempt, deliveries, #memo / 2)
  for j = 1, #memo, 2 do put2(memo[j], memo[j + 1]) end
end
for i = 1, n do one(i) end
return out
