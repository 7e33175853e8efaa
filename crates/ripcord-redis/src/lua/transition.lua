
-- transition: compare-and-set of the fleet state (MemoryStore::transition).
-- ARGV: name, channel, from_epoch ('' = unconditional override), to,
--       open_for_us, expires_in_us ('' = none), ttl_ms, actor, reason
-- Returns: applied (0/1), then the view as for sync, then the corruption.
local name, channel = ARGV[1], ARGV[2]
local from = nil
if ARGV[3] ~= '' then from = tonumber(ARGV[3]) end
local to = ARGV[4]
local now = now_us()
local st, corrupt = open_state(KEYS[1], from or 0)
local reps, bad = load_reports(KEYS[2], true)
local reset_view, lapsed_view
if corrupt then reset_view = view(st, reps, now) end
if lapse(st, now) then lapsed_view = view(st, reps, now) end
local allowed
if from == nil then
  allowed = true
else
  allowed = from == st.epoch and st.override_until == 0
    -- The store's clock decides when an open breaker may probe.
    and not (st.state == 'open' and to == 'half_open' and now < st.open_until)
end
if allowed then
  set(st, to, now, tonumber(ARGV[5]))
  if from == nil and ARGV[6] ~= '' then st.override_until = now + tonumber(ARGV[6]) end
end
save(KEYS[1], st)
touch(ARGV[7])
local v = view(st, reps, now)
if reset_view then publish(channel, name, reset_view, 'store', corrupt, true) end
if lapsed_view then publish(channel, name, lapsed_view, 'store', 'override expired', true) end
if allowed then publish(channel, name, v, ARGV[8], ARGV[9], from == nil) end
local detail = corrupt
if bad then detail = detail and (detail .. '; ' .. bad) or bad end
return reply(v, allowed and 1 or 0, detail)
