-- snapworker prelude: the helpers the queue's state-machine scripts share.
-- Not a script of its own: worker/scripts.c sends "prelude .. script" for every script
-- that names this file in its header (line "-- prelude: worker/lua/prelude.lua"); that
-- concatenated text is what SCRIPT LOAD hashes and what EVAL sends. Lua line numbers in
-- an error of such a script are therefore offset by the length of this file.
--
-- now, nows   Redis TIME in ms (number, and as a "%d" string)
-- int(x)      x as a "%d" string
-- NONE        the empty table hgetall returns for a missing hash
-- hgetall(k)  the hash as a Lua table, or NONE
-- emit(events, maxlen, id, type, status, attempt, data, worker)
--             one event: XADD to 'events', plus one PUBLISH of the same as a JSON object
--             when anyone listens (PUBSUB NUMSUB + NUMPAT, asked once per call). 'data' is
--             JSON text; ids, types and worker names go in unescaped (their grammars admit
--             nothing JSON escapes: common/ids.h). 'maxlen' is unused: the promote tick trims.
-- payload_of(stream, entry)  the entry's `job` field; '' when it has none, nil when gone
-- unlock(lock, id)           compare-and-delete of a session lock
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(x) return string.format('%d', x) end
local nows = int(now)
local NONE = {}
local function hgetall(k)
  local r = redis.call('HGETALL', k)
  if #r == 0 then return NONE end
  local h = {}
  for j = 1, #r, 2 do h[r[j]] = r[j + 1] end
  return h
end
local listeners = nil
local function emit(ev, evmax, id, typ, status, attempt, data, worker)
  redis.call('XADD', ev, '*', 'job_id', id, 'type', typ,
    'status', status, 'attempt', attempt, 'data', data, 'worker', worker, 'ts', nows)
  if listeners == nil then
    listeners = redis.call('PUBSUB', 'NUMSUB', ev)[2] + redis.call('PUBSUB', 'NUMPAT')
  end
  if listeners == 0 then return end
  redis.call('PUBLISH', ev, '{"job_id":"' .. id .. '","type":"' .. typ ..
    '","status":"' .. status .. '","attempt":' .. attempt .. ',"data":' .. data ..
    ',"worker":"' .. worker .. '","ts":' .. nows .. '}')
end
local function payload_of(stream, entry)
  local e = redis.call('XRANGE', stream, entry, entry)
  if #e == 0 or not e[1][2] then return nil end
  local f = e[1][2]
  for j = 1, #f, 2 do if f[j] == 'job' then return f[j + 1] end end
  return ''
end
local function unlock(lk, id)
  if redis.call('GET', lk) == id then redis.call('DEL', lk) end
end

