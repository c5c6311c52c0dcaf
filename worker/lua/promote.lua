-- snapworker promote (docs/queue.md "Promotion"): move due members of the delayed zset
-- into the stream of their priority, and trim the events stream. Run by the worker's
-- promote timer (worker/sched.c), which sleeps until the next due time it returns.
-- prelude: worker/lua/prelude.lua
--
-- KEYS[1] {ns}:{Q}:delayed   KEYS[2] {ns}:{Q}:stream:high   KEYS[3] {ns}:{Q}:stream
-- KEYS[4] {ns}:{Q}:stream:low   KEYS[5] {ns}:{Q}:events
-- ARGV[1] at most this many members   ARGV[2] job hash prefix ("{ns}:{Q}:job:")
-- ARGV[3] events_maxlen (XTRIM MAXLEN ~, once per tick instead of on every XADD)
--
-- Each due member is XADDed with a `due` field (its score) before `job`: the worker then
-- knows any delay_ms/run_at_ms was served. A job hash in `retrying` goes back to
-- `queued`; `due_ms` is removed from any job hash found.
--
-- Reply: {moved, next due ms or -1 when the zset is empty, Redis now ms}
-- Error: "ERR promote: ..." unless 5 KEYS and 3 ARGV (nothing written).
if #KEYS ~= 5 or #ARGV ~= 3 then
  return redis.error_reply('ERR promote: expected 5 KEYS and 3 ARGV, got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
redis.call('XTRIM', KEYS[5], 'MAXLEN', '~', ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
for j = 1, #due, 2 do
  local m, score = due[j], due[j + 1]
  local ok, p = pcall(cjson.decode, m)
  local sk = KEYS[3]
  if ok and type(p) == 'table' then
    if p.priority == 'high' then sk = KEYS[2] elseif p.priority == 'low' then sk = KEYS[4] end
  end
  redis.call('XADD', sk, '*', 'due', score, 'job', m)
  redis.call('ZREM', KEYS[1], m)
  if ok and type(p) == 'table' and type(p.id) == 'string' and #p.id <= 128
     and string.match(p.id, '^[%w_.:%-]+$') then
    local hk = ARGV[2] .. p.id
    local st = redis.call('HGET', hk, 'status')
    if st == 'retrying' then
      redis.call('HSET', hk, 'status', 'queued', 'updated_ms', nows)
    end
    if st then redis.call('HDEL', hk, 'due_ms') end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due / 2, tonumber(nxt[2]) or -1, now}
