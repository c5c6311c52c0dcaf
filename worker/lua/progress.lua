-- snapworker progress (docs/contract.md): one `progress` event for a running job.
-- Written from an executor thread, at most once a second per job (worker/exec.c).
-- prelude: worker/lua/prelude.lua
--
-- KEYS[1] {ns}:{Q}:events
-- ARGV[1] job id  ARGV[2] type  ARGV[3] attempt  ARGV[4] data (JSON)  ARGV[5] worker
--
-- Reply: 1. Error: "ERR progress: ..." unless 1 KEY and 5 ARGV.
if #KEYS ~= 1 or #ARGV ~= 5 then
  return redis.error_reply('ERR progress: expected 1 KEY and 5 ARGV, got ' .. #KEYS .. ' KEYS, ' .. #ARGV .. ' ARGV')
end
emit(KEYS[1], '', ARGV[1], ARGV[2], 'progress', ARGV[3], ARGV[4], ARGV[5])
return 1
