
-- reconcile: checks many breakers against the epochs an instance knows,
-- refreshing TTLs where asked (MemoryStore::reconcile). One read per breaker
-- when nothing changed.
-- KEYS: state and reports key of each breaker in turn.
-- ARGV: channel, the heartbeats, then per breaker: name, known_epoch,
--       ttl_ms, touch (1/0).
-- Returns per breaker: the view as for sync, with '' as the state when there
-- is no news (then only the corruption slot matters).
local channel = ARGV[1]
local live, at = read_live(2)
local now = now_us()
local out = {}
local function none(detail)
  out[#out + 1] = ''
  for _ = 1, 7 do out[#out + 1] = 0 end
  out[#out + 1] = detail or ''
end
for b = 0, #KEYS / 2 - 1 do
  local sk, rk = KEYS[2 * b + 1], KEYS[2 * b + 2]
  local a = at + 4 * b
  local name, known, ttl, touch = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3] == '1'
  local fast = redis.pcall('HMGET', sk, 'v', 'epoch', 'override_until')
  local ok = type(fast) == 'table' and fast.err == nil
  if ok and fast[1] == false and fast[2] == false and fast[3] == false then
    none() -- not in the store: nothing to learn
  elseif ok and fast[1] == SCHEMA and uint(fast[2]) == known and fast[3] == '0' then
    if touch then
      redis.call('PEXPIRE', sk, ttl)
      redis.call('PEXPIRE', rk, ttl)
    end
    none()
  else
    local st, corrupt = open_state(sk, 0)
    local reps, bad = load_reports(rk, true)
    local reset_view
    if corrupt then reset_view = view(st, reps, now, live) end
    local lapsed = lapse(st, now)
    save(sk, st)
    if touch or st.dirty then
      redis.call('PEXPIRE', sk, ttl)
      redis.call('PEXPIRE', rk, ttl)
    end
    local v = view(st, reps, now, live)
    if reset_view then publish(channel, name, reset_view, 'store', corrupt, true) end
    if lapsed then publish(channel, name, v, 'store', 'override expired', true) end
    local detail = corrupt
    if bad then detail = detail and (detail .. '; ' .. bad) or bad end
    if corrupt or lapsed or st.epoch ~= known then
      for i = 1, 8 do out[#out + 1] = v[i] end
      out[#out + 1] = detail or ''
    else
      none(detail)
    end
  end
end
return out
