/* worker/scripts.c — Lua for the queue transitions of DESIGN.md §2 and §4.
 *
 * Job hash  snapworker:{Q}:job:<id>
 *   status       queued | running | retrying | succeeded | dead
 *   type, attempt (1-based), worker (consumer name), entry (stream id being run),
 *   lease_until (ms, Redis TIME; meaningful while running), deliveries (starts,
 *   incl. reclaims), result / error (JSON), updated_ms, m:<name> (job memo)
 * Whether a job holds its session lock follows from its type (job_type.session_lock),
 * so the worker passes that flag to every script instead of storing it.
 *
 * Cost model (measured, docs/benchmarks.md): on the hot path Redis spends most of
 * its time moving strings across the Lua boundary (each KEYS/ARGV element, each
 * redis.call argument and each reply element costs ~0.15-0.3 us), so the scripts
 * keep per-job arguments, hash fields and reply elements few and flat.
 *
 * start   (batch) decide per delivered entry: ended -> re-emit terminal event + ack;
 *         running elsewhere under a live lease -> ack silently; session locked by
 *         another job -> back to the delayed zset (no attempt counted); poison;
 *         else mark running, take the session lock, emit `started`.
 * finish  (batch) succeeded | retry | dead | reject | release, fenced on
 *         (worker, entry) so a worker that lost its lease cannot overwrite.
 * promote move due members of the delayed zset into the stream.
 * renew   extend leases: XCLAIM ... JUSTID (no delivery-count bump) + hash + lock.
 * requeue_dead  move one dead entry back into the stream with a fresh job hash.
 *
 * Events are written with XADD (trimmed MAXLEN ~ by the promote tick) and PUBLISHed
 * on the events key as one JSON object with `data` embedded (data is already JSON
 * text). The PUBLISH is skipped when nobody listens (PUBSUB NUMSUB of the channel plus
 * NUMPAT, asked once per script: a script is atomic, so nobody can subscribe midway). Ids, types and worker names are concatenated into that JSON unescaped:
 * their grammars (common/ids.h, payload_parse, worker_new) admit no character that
 * JSON would escape. */
#include "worker/scripts.h"

#include <string.h>

#include "common/embedded.h"

#define LUA_COMMON \
    "local t = redis.call('TIME')\n" \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
    "local function int(x) return string.format('%d', x) end\n" \
    "local nows = int(now)\n" \
    "local NONE = {}\n" \
    "local function hgetall(k)\n" \
    "  local r = redis.call('HGETALL', k)\n" \
    "  if #r == 0 then return NONE end\n" \
    "  local h = {}\n" \
    "  for j = 1, #r, 2 do h[r[j]] = r[j + 1] end\n" \
    "  return h\n" \
    "end\n" \
    "local listeners = nil\n" \
    "local function emit(ev, evmax, id, typ, status, attempt, data, worker)\n" \
    "  redis.call('XADD', ev, '*', 'job_id', id, 'type', typ,\n" \
    "    'status', status, 'attempt', attempt, 'data', data, 'worker', worker, 'ts', nows)\n" \
    "  if listeners == nil then\n" \
    "    listeners = redis.call('PUBSUB', 'NUMSUB', ev)[2] + redis.call('PUBSUB', 'NUMPAT')\n" \
    "  end\n" \
    "  if listeners == 0 then return end\n" \
    "  redis.call('PUBLISH', ev, '{\"job_id\":\"' .. id .. '\",\"type\":\"' .. typ ..\n" \
    "    '\",\"status\":\"' .. status .. '\",\"attempt\":' .. attempt .. ',\"data\":' .. data ..\n" \
    "    ',\"worker\":\"' .. worker .. '\",\"ts\":' .. nows .. '}')\n" \
    "end\n" \
    "local function payload_of(stream, entry)\n" \
    "  local e = redis.call('XRANGE', stream, entry, entry)\n" \
    "  if #e == 0 or not e[1][2] then return nil end\n" \
    "  local f = e[1][2]\n" \
    "  for j = 1, #f, 2 do if f[j] == 'job' then return f[j + 1] end end\n" \
    "  return ''\n" \
    "end\n" \
    "local function unlock(lk, id)\n" \
    "  if redis.call('GET', lk) == id then redis.call('DEL', lk) end\n" \
    "end\n"

/* KEYS: events, delayed, then per job: hash, lock, stream (the entry's priority stream).
 * ARGV: group, consumer, lease_ms, events_maxlen, busy_delay_ms, recover, n,
 *       then per job: entry, id, type, uselock, max_deliveries, attempt_base, raw.
 * 'raw' is the canonical payload when the entry holds another form (Celery).
 * A job cancelled before it started (status cancelled) is acked unrun, its event
 * already written by the cancel script (worker/lua/cancel.lua).
 * Returns one flat array: per job action, attempt, deliveries, npairs, then npairs
 * (name, value) pairs: the memo for run/poison, (terminal status, data) for ended.
 * (A nested table per job cost ~1 us more per job.) */
static const char start_lua[] = LUA_COMMON
    "local group, me, lease, leases = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[3]\n"
    "local evmax, busy, recover, n = ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])\n"
    "local until_s = int(now + lease)\n"
    "local out, no = {}, 0\n"
    "local function put(a, b, c, d) out[no + 1] = a; out[no + 2] = b; out[no + 3] = c; out[no + 4] = d; no = no + 4 end\n"
    "local function put2(a, b) out[no + 1] = a; out[no + 2] = b; no = no + 2 end\n"
    "local sk\n"
    "local function ackdel(entry)\n"
    "  redis.call('XACK', sk, group, entry); redis.call('XDEL', sk, entry)\n"
    "end\n"
    "local function one(i)\n"
    "  local b = 7 + (i - 1) * 7\n"
    "  local entry, id, typ, uselock = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]\n"
    "  local maxdel, base, raw = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), ARGV[b + 7]\n"
    "  local hk, lk = KEYS[3 * i], KEYS[3 * i + 1]\n"
    "  sk = KEYS[3 * i + 2]\n"
    "  local h = hgetall(hk)\n"
    "  local st = h.status\n"
    "  local attempt = tonumber(h.attempt) or 0\n"
    "  local deliveries = tonumber(h.deliveries) or 0\n"
    "  if st == 'succeeded' or st == 'dead' or st == 'cancelled' then\n"
    "    local data = (st == 'succeeded') and (h.result or '{}') or (h.error or '{}')\n"
    "    if st ~= 'cancelled' then\n"
    "      emit(KEYS[1], evmax, id, h.type or typ, st, h.attempt or '0', data, h.worker or '')\n"
    "    end\n"
    "    ackdel(entry); put('ended', attempt, deliveries, 1); put2(st, data); return\n"
    "  end\n"
    "  local live = st == 'running' and (tonumber(h.lease_until) or 0) > now\n"
    "  local mine = h.worker == me and h.entry == entry\n"
    "  if live and not (recover == '1' and mine) then\n"
    "    if h.entry == entry then put('skip', attempt, deliveries, 0); return end\n"
    "    ackdel(entry); put('dup', attempt, deliveries, 0); return\n"
    "  end\n"
    "  if st == 'retrying' and h.entry ~= entry then ackdel(entry); put('dup', attempt, deliveries, 0); return end\n"
    "  if uselock == '1' then\n"
    "    if not redis.call('SET', lk, id, 'NX', 'PX', leases) then\n"
    "      if redis.call('GET', lk) ~= id then\n"
    "        local p = (raw ~= '' and raw) or payload_of(sk, entry)\n"
    "        local dues = int(now + busy)\n"
    "        if p then redis.call('ZADD', KEYS[2], dues, p) end\n"
    "        if not st then\n"
    "          redis.call('HSET', hk, 'status', 'queued', 'type', typ, 'attempt', ARGV[b + 6], 'updated_ms', nows,\n"
    "            'due_ms', dues)\n"
    "        elseif st == 'running' then\n"
    "          -- reclaimed from a stalled owner but parked: fence that owner out\n"
    "          redis.call('HSET', hk, 'status', 'queued', 'entry', '', 'worker', '', 'lease_until', '0',\n"
    "            'updated_ms', nows, 'due_ms', dues)\n"
    "        else\n"
    "          redis.call('HSET', hk, 'due_ms', dues)\n"
    "        end\n"
    "        ackdel(entry); put('busy', attempt, deliveries, 0); return\n"
    "      end\n"
    "      redis.call('PEXPIRE', lk, leases)\n"
    "    end\n"
    "  end\n"
    "  if st == 'running' then\n"
    "    if not (recover == '1' and mine) then deliveries = deliveries + 1 end\n"
    "  else\n"
    "    attempt = math.max(attempt, base) + 1; deliveries = deliveries + 1\n"
    "  end\n"
    "  local as = int(attempt)\n"
    "  redis.call('HSET', hk, 'status', 'running', 'type', typ, 'attempt', as, 'worker', me,\n"
    "    'entry', entry, 'lease_until', until_s, 'deliveries', int(deliveries), 'updated_ms', nows)\n"
    "  local act = 'run'\n"
    "  if deliveries > maxdel then act = 'poison' else\n"
    "    emit(KEYS[1], evmax, id, typ, 'started', as, '{}', me)\n"
    "  end\n"
    "  if h == NONE then put(act, attempt, deliveries, 0); return end\n"
    "  local memo = {}\n"
    "  for k, v in pairs(h) do\n"
    "    if string.sub(k, 1, 2) == 'm:' then memo[#memo + 1] = string.sub(k, 3); memo[#memo + 1] = v end\n"
    "  end\n"
    "  put(act, attempt, deliveries, #memo / 2)\n"
    "  for j = 1, #memo, 2 do put2(memo[j], memo[j + 1]) end\n"
    "end\n"
    "for i = 1, n do one(i) end\n"
    "return out\n";

/* KEYS: events, delayed, dead, then per job: hash, lock, stream (the entry's stream).
 * ARGV: group, consumer, ttl_s, events_maxlen, dead_maxlen, n,
 *       then per job: entry, id, type, outcome, attempt, data, uselock, and for
 *       every outcome but succeeded two more: delay_ms, raw.
 * 'raw' is the canonical payload (the stream copy is used when it is empty).
 * 'defer' (a Celery ETA) parks the job in the delayed zset without running it, due
 * in delay_ms; 'defer_at' the same, due at delay_ms (absolute, Redis clock: a payload's
 * run_at_ms / delay_ms). 'cancel' ends a running job `cancelled` (worker/lua/cancel.lua).
 * The hash keeps `due_ms` of a parked job so that cancel can find its member.
 * The argument layout is checked before anything is written: a stride that does not
 * match ARGV fails the whole call (the worker retries it) instead of misreading.
 * The session lock is released by compare-and-delete (GET == id), even while the
 * lease is live: should the key ever vanish early (eviction, an operator), a plain
 * DEL would delete the next holder's lock and let a third job overlap.
 * Acks are batched per stream (XACK/XDEL take many ids).
 * Returns per job 'ok' or 'lost'. */
static const char finish_lua[] = LUA_COMMON
    "local group, me, ttl = ARGV[1], ARGV[2], ARGV[3]\n"
    "local evmax, deadmax, n = ARGV[4], ARGV[5], tonumber(ARGV[6])\n"
    "local out, acks, order = {}, {}, {}\n"
    "local sk\n"
    "local function ackdel(entry)\n"
    "  local l = acks[sk]\n"
    "  if not l then l = {}; acks[sk] = l; order[#order + 1] = sk end\n"
    "  l[#l + 1] = entry\n"
    "end\n"
    "local function payload(raw, entry) if raw ~= '' then return raw end return payload_of(sk, entry) end\n"
    "local function to_dead(entry, id, data, attempt, p)\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', deadmax, '*', 'job', string.sub(p or '', 1, 1048576),\n"
    "    'job_id', id, 'source_id', entry, 'error', data, 'attempts', attempt, 'worker', me, 'ts', nows)\n"
    "end\n"
    "local b = 6\n"
    "for i = 1, n do\n"
    "  if ARGV[b + 4] == 'succeeded' then b = b + 7 else b = b + 9 end\n"
    "end\n"
    "if b ~= #ARGV or #KEYS ~= 3 + 3 * n then return redis.error_reply('ERR finish: bad argument layout') end\n"
    "b = 6\n"
    "local function one(i)\n"
    "  local entry, id, typ, outcome = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]\n"
    "  local attempt, data, uselock = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]\n"
    "  local delay, raw = 0, ''\n"
    "  if outcome == 'succeeded' then b = b + 7 else\n"
    "    delay, raw = tonumber(ARGV[b + 8]), ARGV[b + 9]; b = b + 9\n"
    "  end\n"
    "  local hk, lk = KEYS[1 + 3 * i], KEYS[2 + 3 * i]\n"
    "  sk = KEYS[3 + 3 * i]\n"
    "  if outcome == 'defer' or outcome == 'defer_at' then\n"
    "    local due = (outcome == 'defer') and (now + delay) or delay\n"
    "    local dues = int(due)\n"
    "    if redis.call('EXISTS', hk) == 0 then\n"
    "      redis.call('HSET', hk, 'status', 'queued', 'type', typ, 'attempt', attempt, 'updated_ms', nows,\n"
    "        'due_ms', dues)\n"
    "      redis.call('ZADD', KEYS[2], dues, payload(raw, entry))\n"
    "    else\n"
    "      local st = redis.call('HGET', hk, 'status')\n"
    "      if st ~= 'cancelled' then\n"
    "        redis.call('HSET', hk, 'due_ms', dues)\n"
    "        redis.call('ZADD', KEYS[2], dues, payload(raw, entry))\n"
    "      end\n"
    "    end\n"
    "    ackdel(entry); return 'ok'\n"
    "  end\n"
    "  if outcome == 'reject' then\n"
    "    -- a malformed copy never touches a job that runs under a live lease or ended;\n"
    "    -- any other record (none, queued, retrying, expired) ends dead with it\n"
    "    local h = (id ~= '') and redis.call('HMGET', hk, 'status', 'lease_until', 'attempt') or {}\n"
    "    local live = h[1] == 'running' and (tonumber(h[2]) or 0) > now\n"
    "    local ended = h[1] == 'succeeded' or h[1] == 'dead' or h[1] == 'cancelled'\n"
    "    if h[3] and tonumber(h[3]) and tonumber(h[3]) > tonumber(attempt) then attempt = h[3] end\n"
    "    to_dead(entry, id, data, attempt, payload(raw, entry))\n"
    "    if id ~= '' and not live and not ended then\n"
    "      redis.call('HSET', hk, 'status', 'dead', 'type', typ, 'attempt', attempt, 'error', data,\n"
    "        'worker', me, 'entry', entry, 'updated_ms', nows)\n"
    "      redis.call('EXPIRE', hk, ttl)\n"
    "      emit(KEYS[1], evmax, id, typ, 'dead', attempt, data, me)\n"
    "    end\n"
    "    ackdel(entry); return 'ok'\n"
    "  end\n"
    "  local h = redis.call('HMGET', hk, 'worker', 'entry', 'status')\n"
    "  if h[1] ~= me or h[2] ~= entry or h[3] ~= 'running' then return 'lost' end\n"

    "  if outcome == 'release' then\n"
    "    local p = payload(raw, entry)\n"
    "    -- `due` 0: any delay of the payload was served before it was read\n"
    "    if p then redis.call('XADD', sk, '*', 'due', '0', 'job', p) end\n"
    "    local d = tonumber(redis.call('HGET', hk, 'deliveries')) or 1\n"
    "    redis.call('HSET', hk, 'status', 'queued', 'attempt', int(tonumber(attempt) - 1), 'deliveries',\n"
    "      int(math.max(0, d - 1)), 'lease_until', '0', 'updated_ms', nows)\n"
    "    if uselock == '1' then unlock(lk, id) end\n"
    "    ackdel(entry); return 'ok'\n"
    "  end\n"
    "  if outcome == 'succeeded' then\n"
    "    redis.call('HSET', hk, 'status', 'succeeded', 'result', data, 'updated_ms', nows)\n"
    "    redis.call('EXPIRE', hk, ttl)\n"
    "    emit(KEYS[1], evmax, id, typ, 'succeeded', attempt, data, me)\n"
    "  elseif outcome == 'retry' then\n"
    "    local p = payload(raw, entry)\n"
    "    local dues = int(now + delay)\n"
    "    if p then redis.call('ZADD', KEYS[2], dues, p) end\n"
    "    redis.call('HSET', hk, 'status', 'retrying', 'error', data, 'updated_ms', nows, 'lease_until', '0',\n"
    "      'due_ms', dues)\n"
    "    emit(KEYS[1], evmax, id, typ, 'failed', attempt, data, me)\n"
    "  elseif outcome == 'cancel' then\n"
    "    redis.call('HSET', hk, 'status', 'cancelled', 'error', data, 'updated_ms', nows)\n"
    "    redis.call('EXPIRE', hk, ttl)\n"
    "    emit(KEYS[1], evmax, id, typ, 'cancelled', attempt, data, me)\n"
    "  else\n"
    "    to_dead(entry, id, data, attempt, payload(raw, entry))\n"
    "    redis.call('HSET', hk, 'status', 'dead', 'error', data, 'updated_ms', nows)\n"
    "    redis.call('EXPIRE', hk, ttl)\n"
    "    emit(KEYS[1], evmax, id, typ, 'dead', attempt, data, me)\n"
    "  end\n"
    "  if uselock == '1' then unlock(lk, id) end\n"
    "  ackdel(entry); return 'ok'\n"
    "end\n"
    "for i = 1, n do out[i] = one(i) end\n"
    "for _, s in ipairs(order) do\n"
    "  redis.call('XACK', s, group, unpack(acks[s])); redis.call('XDEL', s, unpack(acks[s]))\n"
    "end\n"
    "return out\n";

/* KEYS: delayed, stream:high, stream, stream:low, events.
 * ARGV: limit, job hash prefix, events_maxlen.
 * Each due member goes to the stream of its "priority" with a `due` field (its
 * score) before `job`: the worker then knows any delay_ms/run_at_ms was served.
 * Also trims the events stream (MAXLEN ~): once per tick instead of on every
 * XADD, which halves the cost of an event on the hot path.
 * Returns {moved, next_due_ms or -1, now}. */
static const char promote_lua[] = LUA_COMMON
    "redis.call('XTRIM', KEYS[5], 'MAXLEN', '~', ARGV[3])\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))\n"
    "for j = 1, #due, 2 do\n"
    "  local m, score = due[j], due[j + 1]\n"
    "  local ok, p = pcall(cjson.decode, m)\n"
    "  local sk = KEYS[3]\n"
    "  if ok and type(p) == 'table' then\n"
    "    if p.priority == 'high' then sk = KEYS[2] elseif p.priority == 'low' then sk = KEYS[4] end\n"
    "  end\n"
    "  redis.call('XADD', sk, '*', 'due', score, 'job', m)\n"
    "  redis.call('ZREM', KEYS[1], m)\n"
    "  if ok and type(p) == 'table' and type(p.id) == 'string' and #p.id <= 128\n"
    "     and string.match(p.id, '^[%w_.:%-]+$') then\n"
    "    local hk = ARGV[2] .. p.id\n"
    "    local st = redis.call('HGET', hk, 'status')\n"
    "    if st == 'retrying' then\n"
    "      redis.call('HSET', hk, 'status', 'queued', 'updated_ms', nows)\n"
    "    end\n"
    "    if st then redis.call('HDEL', hk, 'due_ms') end\n"
    "  end\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {#due / 2, tonumber(nxt[2]) or -1, now}\n";

/* KEYS: per job: hash, lock, stream. ARGV: group, consumer, lease_ms, n,
 * then per job: entry, id, uselock. Returns per job 1 (renewed), 0 (lost) or
 * 2 (renewed, and cancel was asked: worker/lua/cancel.lua). */
static const char renew_lua[] = LUA_COMMON
    "local group, me, lease, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local until_s = int(now + lease)\n"
    "local out = {}\n"
    "for i = 1, n do\n"
    "  local entry, id, uselock = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]\n"
    "  local hk, lk, sk = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]\n"
    "  local h = redis.call('HMGET', hk, 'worker', 'entry', 'status', 'cancel')\n"
    "  out[i] = 0\n"
    "  if h[1] == me and h[2] == entry and h[3] == 'running' then\n"
    "    -- the entry must still be pending (not acked by a replica that took over)\n"
    "    local c = redis.call('XCLAIM', sk, group, me, 0, entry, 'JUSTID')\n"
    "    -- and the session lock ours: re-take it if it lapsed, else the lease is lost\n"
    "    local lockok = true\n"
    "    if uselock == '1' then\n"
    "      local holder = redis.call('GET', lk)\n"
    "      if holder == id then redis.call('PEXPIRE', lk, ARGV[3])\n"
    "      elseif holder or not redis.call('SET', lk, id, 'NX', 'PX', ARGV[3]) then lockok = false end\n"
    "    end\n"
    "    if #c > 0 and lockok then\n"
    "      redis.call('HSET', hk, 'lease_until', until_s)\n"
    "      out[i] = (h[4] == '1') and 2 or 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: job hashes of jobs this worker holds. Returns per key 1 when a cancel was
 * asked (field `cancel`), else 0. Run every second while jobs are in flight. */
static const char poll_cancel_lua[] =
    "local out = {}\n"
    "for i = 1, #KEYS do out[i] = (redis.call('HGET', KEYS[i], 'cancel') == '1') and 1 or 0 end\n"
    "return out\n";

/* KEYS: events. ARGV: job id, type, attempt, data (JSON), worker, consumer entry.
 * One `progress` event (XADD + PUBLISH when listened to); written from an executor
 * thread at most once a second per job (worker/exec.c). */
static const char progress_lua[] = LUA_COMMON
    "emit(KEYS[1], '', ARGV[1], ARGV[2], 'progress', ARGV[3], ARGV[4], ARGV[5])\n"
    "return 1\n";

/* KEYS: dead, stream:high, stream, stream:low. ARGV: dead entry id, job hash prefix.
 * The payload goes back to the stream of its "priority".
 * Returns the new stream id, or false when the dead entry does not exist. */
static const char requeue_dead_lua[] =
    "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "if #e == 0 then return false end\n"
    "local f = e[1][2]; local p, id = '', ''\n"
    "for j = 1, #f, 2 do\n"
    "  if f[j] == 'job' then p = f[j + 1] elseif f[j] == 'job_id' then id = f[j + 1] end\n"
    "end\n"
    "if id ~= '' then redis.call('DEL', ARGV[2] .. id) end\n"
    "local sk = KEYS[3]\n"
    "local ok, pj = pcall(cjson.decode, p)\n"
    "if ok and type(pj) == 'table' then\n"
    "  if pj.priority == 'high' then sk = KEYS[2] elseif pj.priority == 'low' then sk = KEYS[4] end\n"
    "end\n"
    "local nid = redis.call('XADD', sk, '*', 'due', '0', 'job', p)\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return nid\n";

/* KEYS: stream:high, stream, stream:low, then kombu lists in pop order (lowest
 * priority step first). ARGV: max messages, size limit in bytes, bytes kept of an
 * oversize message, then one character per list: the stream it feeds ('0' high,
 * '1' default, '2' low; the step's position among the steps, in thirds: DESIGN §8b,
 * docs/producers.md "Celery").
 * Each message is RPOPed (kombu LPUSHes) and XADDed as field `celery` in the same
 * script, so no crash can lose one between the two. A message over the size limit is
 * not copied whole into the stream (every reader would have to hold it): its first
 * ARGV[3] bytes go as field `celery_oversize`, with `bytes` (its size) and `task_id`
 * (read by the rule of celery_scan_task_id in worker/celery_msg.c: the first "id"
 * string after "headers", else "correlation_id"; '' when none), so the worker can
 * still answer FAILURE and keep a dead entry. Returns the number moved. */
static const char celery_ingress_lua[] =
    "local moved, max = 0, tonumber(ARGV[1])\n"
    "local limit, keep, route = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] or ''\n"
    "local function task_id(m)\n"
    "  local id\n"
    "  local h = string.find(m, '\"headers\"', 1, true)\n"
    "  if h then id = string.match(m, '\"id\"%s*:%s*\"([%w_.:%-]+)\"', h) end\n"
    "  if not id then id = string.match(m, '\"correlation_id\"%s*:%s*\"([%w_.:%-]+)\"') end\n"
    "  if id and #id <= 128 then return id end\n"
    "  return ''\n"
    "end\n"
    "for i = 4, #KEYS do\n"
    "  local sk = KEYS[1 + (tonumber(string.sub(route, i - 3, i - 3)) or 1)]\n"
    "  while moved < max do\n"
    "    local m = redis.call('RPOP', KEYS[i])\n"
    "    if not m then break end\n"
    "    if #m > limit then\n"
    "      redis.call('XADD', sk, '*', 'celery_oversize', string.sub(m, 1, keep),\n"
    "        'bytes', tostring(#m), 'task_id', task_id(m))\n"
    "    else\n"
    "      redis.call('XADD', sk, '*', 'celery', m)\n"
    "    end\n"
    "    moved = moved + 1\n"
    "  end\n"
    "  if moved >= max then break end\n"
    "end\n"
    "return moved\n";

/* On the result backend. KEYS: celery-task-meta-<id> each. ARGV: expiry s, then
 * one meta JSON per key. Writes like Celery's Redis backend (SETEX, then PUBLISH on
 * the key name) unless that task already reached a ready state.
 * Returns per key 1 written, 0 kept. */
static const char celery_result_lua[] =
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  out[i] = 0\n"
    "  local cur = redis.call('GET', KEYS[i])\n"
    "  local ready = false\n"
    "  if cur then\n"
    "    local ok, m = pcall(cjson.decode, cur)\n"
    "    ready = ok and type(m) == 'table' and (m.status == 'SUCCESS' or m.status == 'FAILURE'\n"
    "      or m.status == 'REVOKED')\n"
    "  end\n"
    "  if not ready then\n"
    "    redis.call('SETEX', KEYS[i], ARGV[1], ARGV[i + 1])\n"
    "    redis.call('PUBLISH', KEYS[i], ARGV[i + 1])\n"
    "    out[i] = 1\n"
    "  end\n"
    "end\n"
    "return out\n";

static const char *const sources[SCR_COUNT] = {
    start_lua,          finish_lua,        promote_lua,     renew_lua, requeue_dead_lua,
    celery_ingress_lua, celery_result_lua, poll_cancel_lua, progress_lua};
/* SHA1s as Redis reported them (SCRIPT LOAD on connect). Not computed here: the
 * first libcrypto call maps ~4 MiB (docs/decisions.md), and Redis knows the hash. */
static char shas[SCR_COUNT][41];

static const char *const names[SCR_COUNT] = {"start",          "finish",        "promote",
                                             "renew",          "requeue_dead",  "celery_ingress",
                                             "celery_result",  "poll_cancel",   "progress",
                                             "enqueue",        "cancel"};

/* The producer scripts live in files (worker/lua/), embedded at build time, so the
 * CLI, the Python client (clients/python/snapworker/lua/) and docs share one text. */
static const char *const files[SCR_COUNT] = {[SCR_ENQUEUE] = "worker/lua/enqueue.lua",
                                             [SCR_CANCEL] = "worker/lua/cancel.lua"};

const char *scr_source(scr_id id)
{
    if (files[id]) {
        size_t len;
        const char *s = embedded_get(files[id], &len);
        return s ? s : "return redis.error_reply('ERR script not embedded')";
    }
    return sources[id];
}

const char *scr_name(scr_id id) { return names[id]; }

const char *scr_sha(scr_id id) { return shas[id][0] ? shas[id] : NULL; }

int scr_learn_sha(scr_id id, const char *sha, size_t len)
{
    if (id < 0 || id >= SCR_COUNT || len != 40) return -1;
    for (size_t i = 0; i < len; i++)
        if (!((sha[i] >= '0' && sha[i] <= '9') || (sha[i] >= 'a' && sha[i] <= 'f'))) return -1;
    memcpy(shas[id], sha, 40);
    shas[id][40] = '\0';
    return 0;
}
