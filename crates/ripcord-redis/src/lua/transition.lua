
-- transition: compare-and-set of the fleet state (MemoryStore::transition).
-- ARGV: name, channel, from_epoch ('' = unconditional override), to,
--       open_for_us, expires_in_us ('' = none), ttl_ms, actor, reason,
--       from_state ('' = any), quorum (0 = none), then the heartbeats
-- Returns: applied (1), refused (0) or refused for want of a quorum (2), then
-- the view as for sync, then the corruption.
local name, channel = ARGV[1], ARGV[2]
local from = nil
if ARGV[3] ~= '' then from = tonumber(ARGV[3]) end
local to = ARGV[4]
local now = now_us()
local live = read_live(12)
local st, corrupt = open_state(KEYS[1], from or 0)
local reps, bad = load_reports(KEYS[2], true)
local reset_view, lapsed_view
if corrupt then reset_view = view(st, reps, now, live) end
if lapse(st, now) then lapsed_view = view(st, reps, now, live) end
local from_state, quorum = ARGV[10], tonumber(ARGV[11]) or 0
local allowed, quorum_refused = false, false
if from == nil then
  allowed = true
else
  -- A state this run reset from a corrupt value is closed in a new epoch:
  -- a request made against the lost one still applies to it.
  local cas = (from == st.epoch or corrupt ~= nil) and (from_state == '' or from_state == st.state)
    and st.override_until == 0
    -- The store's clock decides when an open breaker may probe.
    and not (st.state == 'open' and to == 'half_open' and now < st.open_until)
  if cas and quorum > 1 and st.state == 'closed' and to == 'open' then
    -- The requester counts itself; others count when their live window of
    -- this epoch holds a failure or a slow call.
    local seeing = 1
    for id, r in pairs(reps) do
      if id ~= ARGV[8] and r.epoch == st.epoch and alive(id, r, now, live)
          and r.failures + r.slow > 0 then
        seeing = seeing + 1
      end
    end
    quorum_refused = seeing < quorum
  end
  allowed = cas and not quorum_refused
end
if allowed then
  set(st, to, now, tonumber(ARGV[5]))
  if from == nil and ARGV[6] ~= '' then st.override_until = now + tonumber(ARGV[6]) end
end
save(KEYS[1], st)
touch(ARGV[7])
local v = view(st, reps, now, live)
if reset_view then publish(channel, name, reset_view, 'store', corrupt, true) end
if lapsed_view then publish(channel, name, lapsed_view, 'store', 'override expired', true) end
if allowed then publish(channel, name, v, ARGV[8], ARGV[9], from == nil) end
local detail = corrupt
if bad then detail = detail and (detail .. '; ' .. bad) or bad end
local code = 0
if allowed then code = 1 elseif quorum_refused then code = 2 end
return reply(v, code, detail)
