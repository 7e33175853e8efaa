
-- acquire_probe: one half-open probe permit of `epoch` from the shared
-- counter (MemoryStore::acquire_probe).
-- ARGV: name, channel, epoch, limit, ttl_ms, then the heartbeats
-- Returns: granted (0/1), corruption ('' if none)
local name, channel = ARGV[1], ARGV[2]
local epoch, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_us()
local live = read_live(6)
local st, corrupt = open_state(KEYS[1], 0)
local granted = 0
if st.state == 'half_open' and st.epoch == epoch and st.granted < limit then
  st.granted = st.granted + 1
  st.dirty = true
  granted = 1
end
save(KEYS[1], st)
touch(ARGV[5])
local detail = corrupt
if corrupt then
  local reps, bad = load_reports(KEYS[2], true)
  publish(channel, name, view(st, reps, now, live), 'store', corrupt, true)
  if bad then detail = detail .. '; ' .. bad end
end
return { granted, detail or '' }
