-- snapworker requeue_dead (docs/queue.md "Dead requeue"): move one dead entry back into
-- the stream of its payload's priority, with a fresh start (the job hash is deleted, so
-- it runs again from attempt 1). Used by `snapworker dead requeue` and the ops API
-- (worker/cli.c, worker/opsdata.c).
--
-- KEYS[1] {ns}:{Q}:dead   KEYS[2] {ns}:{Q}:stream:high   KEYS[3] {ns}:{Q}:stream
-- KEYS[4] {ns}:{Q}:stream:low
-- ARGV[1] the dead entry id   ARGV[2] job hash prefix ("{ns}:{Q}:job:")
--
-- The payload is XADDed with `due` 0 (any delay was served) and the dead entry deleted.
-- Reply: the new stream entry id, or nil (false) when the dead entry does not exist.
-- Error: "ERR requeue_dead: ..." unless 4 KEYS and 2 ARGV (nothing written).
if #KEYS ~= 4 or #ARGV ~= 2 then
  return redis.error_reply('ERR requeue_dead: expected 4 KEYS and 2 ARGV, got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return false end
local f = e[1][2]; local p, id = '', ''
for j = 1, #f, 2 do
  if f[j] == 'job' then p = f[j + 1] elseif f[j] == 'job_id' then id = f[j + 1] end
end
if id ~= '' then redis.call('DEL', ARGV[2] .. id) end
local sk = KEYS[3]
local ok, pj = pcall(cjson.decode, p)
if ok and type(pj) == 'table' then
  if pj.priority == 'high' then sk = KEYS[2] elseif pj.priority == 'low' then sk = KEYS[4] end
end
local nid = redis.call('XADD', sk, '*', 'due', '0', 'job', p)
redis.call('XDEL', KEYS[1], ARGV[1])
return nid
