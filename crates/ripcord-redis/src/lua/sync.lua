
-- sync: this instance reports its window of one breaker and reads the fleet's
-- view (MemoryStore::sync).
-- ARGV: name, channel, instance, fleet_epoch, calls, failures, slow,
--       stale_after_us, ttl_ms
-- Returns: state, epoch, open_remaining_us, calls, failures, slow, instances,
--          override_expires_in_us (-1: none), corruption ('' if none)
local name, channel, instance = ARGV[1], ARGV[2], ARGV[3]
local fleet_epoch = tonumber(ARGV[4])
local now = now_us()
local st, corrupt = open_state(KEYS[1], fleet_epoch)
local reps, bad = load_reports(KEYS[2], true)
local reset_view
if corrupt then reset_view = view(st, reps, now) end
local lapsed = lapse(st, now)
reps[instance] = {
  epoch = fleet_epoch, calls = tonumber(ARGV[5]), failures = tonumber(ARGV[6]),
  slow = tonumber(ARGV[7]), at = now, stale = tonumber(ARGV[8]),
}
redis.call('HSET', KEYS[2], instance, encode_report(reps[instance]))
for id, r in pairs(reps) do
  if now - r.at > r.stale then
    redis.call('HDEL', KEYS[2], id)
    reps[id] = nil
  end
end
save(KEYS[1], st)
touch(ARGV[9])
local v = view(st, reps, now)
if reset_view then publish(channel, name, reset_view, 'store', corrupt, true) end
if lapsed then publish(channel, name, v, 'store', 'override expired', true) end
local detail = corrupt
if bad then detail = detail and (detail .. '; ' .. bad) or bad end
return reply(v, nil, detail)
