
-- sync: this instance reports its windows of many breakers and reads the
-- fleet's views of them (MemoryStore::sync), in one run.
-- KEYS: state and reports key of each breaker in turn; then, on one
--       server, the instances hash: this run is also the heartbeat.
-- ARGV: channel, instance, heartbeat stale_after_us and ttl_ms, the
--       heartbeats known (ignored with a heartbeat), then per breaker: name,
--       fleet_epoch, calls, failures, slow, stale_after_us, ttl_ms, touch
--       (1: refresh the keys' TTL; 0: only if they are new).
-- Returns per breaker: state, epoch, open_remaining_us, calls, failures,
--          slow, instances, override_expires_in_us (-1: none), corruption
--          ('' if none); then with a heartbeat, the live heartbeats (id, at,
--          stale each) and its corruption.
local channel, instance = ARGV[1], ARGV[2]
local live, at = read_live(5)
local now = now_us()
local out = {}
local beats, beat_detail
if #KEYS % 2 == 1 then
  live, beats, beat_detail = beat(KEYS[#KEYS], instance, ARGV[3], ARGV[4], now)
end
for b = 0, math.floor(#KEYS / 2) - 1 do
  local sk, rk = KEYS[2 * b + 1], KEYS[2 * b + 2]
  local a = at + 8 * b
  local name, fleet_epoch, ttl = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 6]
  local st, corrupt = open_state(sk, fleet_epoch)
  local created = st.dirty
  local reps, bad, existed = load_reports(rk, true)
  local reset_view
  if corrupt then reset_view = view(st, reps, now, live) end
  local lapsed = lapse(st, now)
  reps[instance] = {
    epoch = fleet_epoch, calls = tonumber(ARGV[a + 2]), failures = tonumber(ARGV[a + 3]),
    slow = tonumber(ARGV[a + 4]), at = now, stale = tonumber(ARGV[a + 5]),
  }
  redis.call('HSET', rk, instance, encode_report(reps[instance]))
  for id, r in pairs(reps) do
    if not alive(id, r, now, live) then
      redis.call('HDEL', rk, id)
      reps[id] = nil
    end
  end
  save(sk, st)
  local touch = ARGV[a + 7] == '1'
  if touch or created then redis.call('PEXPIRE', sk, ttl) end
  if touch or not existed then redis.call('PEXPIRE', rk, ttl) end
  local v = view(st, reps, now, live)
  if reset_view then publish(channel, name, reset_view, 'store', corrupt, true) end
  if lapsed then publish(channel, name, v, 'store', 'override expired', true) end
  local detail = corrupt
  if bad then detail = detail and (detail .. '; ' .. bad) or bad end
  for i = 1, 8 do out[#out + 1] = v[i] end
  out[#out + 1] = detail or ''
end
if beats then
  for i = 1, #beats do out[#out + 1] = beats[i] end
  out[#out + 1] = beat_detail or ''
end
return out
