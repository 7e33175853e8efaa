
-- view: the fleet's view of one breaker, read only (MemoryStore::list).
-- ARGV: the heartbeats.
-- Returns: the view as for sync ('missing' as the state if there is none, or
-- 'corrupt' followed by what is wrong).
local now = now_us()
local live = read_live(1)
local st, corrupt = load_state(KEYS[1], false)
if st == nil then
  if corrupt then return { 'corrupt', corrupt } end
  return { 'missing' }
end
local reps, bad = load_reports(KEYS[2], false)
return reply(view(st, reps, now, live), nil, bad)
