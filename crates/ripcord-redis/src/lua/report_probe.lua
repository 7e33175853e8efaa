
-- report_probe: a probe's verdict; closes or re-opens the breaker fleet-wide
-- when the verdict is reached (MemoryStore::report_probe).
-- ARGV: name, channel, epoch, success (0/1), successes_needed, probes,
--       open_for_us, ttl_ms, actor, then the heartbeats
-- Returns: the view as for sync, then the corruption.
local name, channel = ARGV[1], ARGV[2]
local epoch = tonumber(ARGV[3])
local success = ARGV[4] == '1'
local needed, probes = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_us()
local live = read_live(10)
local st, corrupt = open_state(KEYS[1], 0)
local reps, bad = load_reports(KEYS[2], true)
local reset_view
if corrupt then reset_view = view(st, reps, now, live) end
local reason
if st.state == 'half_open' and st.epoch == epoch then
  if success then st.successes = st.successes + 1 else st.failures = st.failures + 1 end
  st.dirty = true
  if st.successes >= needed then
    set(st, 'closed', now, 0)
    reason = 'probes succeeded'
  elseif st.failures > math.max(probes - needed, 0) then
    set(st, 'open', now, tonumber(ARGV[7]))
    reason = 'probe failed'
  end
end
save(KEYS[1], st)
touch(ARGV[8])
local v = view(st, reps, now, live)
if reset_view then publish(channel, name, reset_view, 'store', corrupt, true) end
if reason then publish(channel, name, v, ARGV[9], reason, false) end
local detail = corrupt
if bad then detail = detail and (detail .. '; ' .. bad) or bad end
return reply(v, nil, detail)
