
-- gcra: one fleet-wide rate-limit decision.
-- KEYS[1] = <prefix>:{<name>}:gcra   hash: v, origin (unix seconds), tat (ns since origin)
-- ARGV: emission_interval_ns, burst, n, max_wait_ns, ttl_ms
-- Returns: admitted (1/0), wait or retry-after in ns (-1: never), corruption ('' if none)
if redis.replicate_commands then pcall(redis.replicate_commands) end
local key = KEYS[1]
local t, burst, n, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local time = redis.call('TIME')
local sec, usec = tonumber(time[1]), tonumber(time[2])
local function uint(s)
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.match(s, '^%d+$') then return nil end
  local v = tonumber(s)
  if v == nil or v > 9007199254740992 then return nil end
  return v
end
local origin, tat, detail, dirty = sec, 0, '', true
local kind = redis.call('TYPE', key)
if type(kind) == 'table' then kind = kind.ok end
if kind == 'hash' then
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  if h.v == '1' and uint(h.origin) ~= nil and uint(h.tat) ~= nil then
    origin, tat, dirty = uint(h.origin), uint(h.tat), false
  else
    redis.call('DEL', key)
    detail = 'corrupt value at `' .. key .. '` (not a schema 1 limiter), reset'
  end
elseif kind ~= 'none' then
  redis.call('DEL', key)
  detail = 'corrupt value at `' .. key .. '` (a ' .. kind .. ' where a hash was expected), reset'
end
local now = (sec - origin) * 1000000000 + usec * 1000
-- Keep every number below 2^53: move the origin forward (or back, if the
-- clock went back). Only max(tat, now) matters, so clamping tat at 0 is exact.
if now < 0 or now > 4503599627370496 then
  tat = math.max(tat - (sec - origin) * 1000000000, 0)
  origin = sec
  now = usec * 1000
  dirty = true
end
local admitted, amount, new_tat = gcra_decide(tat, now, t, burst, n, max_wait)
if new_tat ~= tat or dirty then
  redis.call('HSET', key, 'v', '1', 'origin', string.format('%.0f', origin), 'tat', string.format('%.0f', new_tat))
  redis.call('PEXPIRE', key, ARGV[5])
end
return { admitted, amount, detail }
