-- snapworker celery_result (docs/celery.md): write task results to the Celery result
-- backend like Celery's Redis backend does (SETEX, then PUBLISH on the key name), unless
-- the task already reached a ready state (SUCCESS, FAILURE, REVOKED), so a repeated or
-- late write never overwrites a final result. Batched by worker/celery.c.
--
-- KEYS     celery-task-meta-<task id>, one per result (the backend's own names: no {Q})
-- ARGV[1]  expiry in seconds, then ARGV[i+1] the meta JSON for KEYS[i]
--
-- Reply: per key 1 written, 0 kept (a ready state was there).
-- Error: "ERR celery_result: ..." unless #ARGV == #KEYS + 1 (nothing written).
if #ARGV ~= #KEYS + 1 then
  return redis.error_reply('ERR celery_result: expected one meta per KEY after the expiry, got ' ..
    #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
local out = {}
for i = 1, #KEYS do
  out[i] = 0
  local cur = redis.call('GET', KEYS[i])
  local ready = false
  if cur then
    local ok, m = pcall(cjson.decode, cur)
    ready = ok and type(m) == 'table' and (m.status == 'SUCCESS' or m.status == 'FAILURE'
      or m.status == 'REVOKED')
  end
  if not ready then
    redis.call('SETEX', KEYS[i], ARGV[1], ARGV[i + 1])
    redis.call('PUBLISH', KEYS[i], ARGV[i + 1])
    out[i] = 1
  end
end
return out
