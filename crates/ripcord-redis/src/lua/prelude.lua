-- ripcord-redis, schema 1: shared by every breaker script.
--
-- <prefix>:{<name>}:state    hash: v, state, epoch, open_until,
--                             override_until, granted, successes, failures
-- <prefix>:{<name>}:reports  hash: instance -> epoch, calls, failures, slow,
--                             at, stale as six big-endian doubles (48 bytes,
--                             struct '>dddddd': every sync reads every
--                             instance's report, and this is the cheapest
--                             form to read)
-- <prefix>:instances         hash: instance -> "at stale" (heartbeats)
--
-- Single-breaker scripts take KEYS[1] = state, KEYS[2] = reports; batch
-- scripts take both keys of every breaker in turn. Every script that judges
-- liveness gets the heartbeats as an ARGV block: a count, then id, at, stale
-- for each instance (read_live).
--
-- Times are microseconds on the store's clock (TIME); every integer stays
-- below 2^53 so Lua's doubles hold it exactly. `override_until` 0 means no
-- override. Nothing here raises an error on a bad value: a corrupt or foreign
-- value is described, deleted and replaced by a fresh state.
if redis.replicate_commands then pcall(redis.replicate_commands) end

-- The globals the scripts use, as locals: a global read goes through the
-- scripting environment's protection metatable, and these are read for
-- every breaker of a batch (several times per report).
local redis, string, math, struct, table = redis, string, math, struct, table
local type, tonumber, tostring, pairs, ipairs, unpack = type, tonumber, tostring, pairs, ipairs, unpack

local SCHEMA = '1'
local STATES = {
  closed = true, open = true, half_open = true,
  forced_open = true, disabled = true, metrics_only = true,
}
local FIELDS = { 'epoch', 'open_until', 'override_until', 'granted', 'successes', 'failures' }
local MAX_INT = 9007199254740992

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- An integer as decimal digits (never "1e+15").
local function fmt(n)
  return string.format('%.0f', n)
end

-- A non-negative integer written by fmt, or nil.
local function uint(s)
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.match(s, '^%d+$') then
    return nil
  end
  local n = tonumber(s)
  if n == nil or n > MAX_INT then return nil end
  return n
end

local function shown(s)
  s = tostring(s)
  if #s > 40 then s = string.sub(s, 1, 40) .. '...' end
  return s
end

local function key_type(key)
  local t = redis.call('TYPE', key)
  if type(t) == 'table' then t = t.ok end
  return t
end

-- The fields of the hash at `key` as a flat list (empty when there is no
-- key), or nil and the key's type when it is not a hash: one command in
-- the common case, TYPE only for a foreign value.
local function hash_fields(key)
  local raw = redis.pcall('HGETALL', key)
  if type(raw) == 'table' and raw.err == nil then return raw, nil end
  return nil, key_type(key)
end

local function fresh(epoch)
  return {
    state = 'closed', epoch = epoch, open_until = 0, override_until = 0,
    granted = 0, successes = 0, failures = 0, dirty = true,
  }
end

-- The stored state, or nil. On a corrupt value: nil, what was wrong, and the
-- stored epoch if it could still be read; with `repair` the value is deleted.
local function load_state(key, repair)
  -- One HMGET of the schema's fields (a foreign field is ignored, as
  -- before); TYPE only for a value that is not a hash, EXISTS only when no
  -- field is there.
  local raw = redis.pcall('HMGET', key, 'v', 'state', 'epoch', 'open_until', 'override_until',
    'granted', 'successes', 'failures')
  if type(raw) ~= 'table' or raw.err ~= nil then
    local t = key_type(key)
    if repair then redis.call('DEL', key) end
    return nil, 'a ' .. t .. ' where a hash was expected', nil
  end
  local empty = true
  for i = 1, 8 do
    if raw[i] == false then raw[i] = nil else empty = false end
  end
  if empty and redis.call('EXISTS', key) == 0 then return nil, nil, nil end
  local n = {}
  for i = 3, 8 do n[i] = uint(raw[i]) end
  local bad
  if raw[1] ~= SCHEMA then
    bad = 'schema version ' .. shown(raw[1]) .. ', expected ' .. SCHEMA
  elseif not STATES[raw[2]] then
    bad = 'field `state` = ' .. shown(raw[2])
  else
    for i = 3, 8 do
      if n[i] == nil then
        bad = 'field `' .. FIELDS[i - 2] .. '` = ' .. shown(raw[i])
        break
      end
    end
  end
  if bad then
    if repair then redis.call('DEL', key) end
    return nil, bad, n[3]
  end
  return {
    state = raw[2], epoch = n[3], open_until = n[4], override_until = n[5], granted = n[6],
    successes = n[7], failures = n[8], dirty = false,
  }, nil, nil
end

-- The state to work on. `floor` is an epoch the caller already knows (0 if
-- none): a store that lost its data (restart without persistence, eviction,
-- expiry) resumes from it rather than from 0, so instances keep adopting it.
-- A corrupt value is replaced by a closed state in a new epoch.
local function open_state(key, floor)
  local st, corrupt, old = load_state(key, true)
  if st == nil then
    if corrupt then
      st = fresh(math.max(floor, old or 0) + 1)
      corrupt = 'corrupt value at `' .. key .. '` (' .. corrupt .. '), reset to closed'
    else
      st = fresh(floor)
    end
  elseif floor > st.epoch then
    st.epoch = floor
    st.dirty = true
  end
  return st, corrupt
end

local function save(key, st)
  if st.dirty then
    redis.call('HSET', key, 'v', SCHEMA, 'state', st.state, 'epoch', fmt(st.epoch),
      'open_until', fmt(st.open_until), 'override_until', fmt(st.override_until),
      'granted', fmt(st.granted), 'successes', fmt(st.successes), 'failures', fmt(st.failures))
  end
end

local function touch(ttl_ms)
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end

-- The heartbeat block of ARGV starting at `i`: a table id -> {at, stale}, and
-- the index after the block.
local function read_live(i)
  local live = {}
  local n = tonumber(ARGV[i]) or 0
  for j = 0, n - 1 do
    local at, stale = uint(ARGV[i + 2 + 3 * j]), uint(ARGV[i + 3 + 3 * j])
    if at and stale then live[ARGV[i + 1 + 3 * j]] = { at = at, stale = stale } end
  end
  return live, i + 1 + 3 * n
end

-- Records `instance`'s heartbeat in the hash `key` and reads every live
-- one: a table id -> {at, stale}, the same as a flat list (id, at, stale, ...),
-- and a corruption found (deleted), if any.
local function beat(key, instance, stale_us, ttl_ms, now)
  local detail
  local kind = key_type(key)
  if kind ~= 'hash' and kind ~= 'none' then
    redis.call('DEL', key)
    detail = 'corrupt value at `' .. key .. '` (a ' .. kind .. ' where a hash was expected), deleted'
  end
  redis.call('HSET', key, instance, fmt(now) .. ' ' .. stale_us)
  redis.call('PEXPIRE', key, ttl_ms)
  local raw = redis.call('HGETALL', key)
  local live, flat = {}, {}
  for i = 1, #raw, 2 do
    local a, s = string.match(raw[i + 1], '^(%d+) (%d+)$')
    a, s = uint(a), uint(s)
    if a == nil or s == nil then
      redis.call('HDEL', key, raw[i])
      detail = 'corrupt heartbeat of `' .. shown(raw[i]) .. '` at `' .. key .. '`, deleted'
    elseif now - a > s then
      redis.call('HDEL', key, raw[i])
    else
      live[raw[i]] = { at = a, stale = s }
      flat[#flat + 1] = raw[i]
      flat[#flat + 1] = a
      flat[#flat + 1] = s
    end
  end
  return live, flat, detail
end

-- Whether instance `id`'s report `r` counts: fresh by itself, or its instance
-- alive (MemoryStore's Report::live).
local function alive(id, r, now, live)
  if now - r.at <= r.stale then return true end
  local b = live[id]
  return b ~= nil and now - b.at <= b.stale
end

-- Enters `to` in a new epoch (MemoryStore's Entry::set).
local function set(st, to, now, open_for)
  st.state = to
  st.epoch = st.epoch + 1
  if to == 'open' then st.open_until = now + open_for else st.open_until = 0 end
  st.override_until = 0
  st.granted = 0
  st.successes = 0
  st.failures = 0
  st.dirty = true
end

-- Lapses an expired override back to closed; true if it did.
local function lapse(st, now)
  if st.override_until > 0 and now >= st.override_until then
    set(st, 'closed', now, 0)
    return true
  end
  return false
end

local REPORT = '>dddddd'

local function parse_report(s)
  if type(s) ~= 'string' or #s ~= 48 then return nil end
  local e, c, f, sl, at, stale = struct.unpack(REPORT, s)
  -- Whole numbers from 0 to 2^53 (NaN fails every comparison). Inline:
  -- this runs for every instance's report of every breaker synced.
  if not (e >= 0 and c >= 0 and f >= 0 and sl >= 0 and at >= 0 and stale >= 0
      and e <= MAX_INT and c <= MAX_INT and f <= MAX_INT and sl <= MAX_INT
      and at <= MAX_INT and stale <= MAX_INT
      and e % 1 == 0 and c % 1 == 0 and f % 1 == 0 and sl % 1 == 0
      and at % 1 == 0 and stale % 1 == 0) then
    return nil
  end
  return { epoch = e, calls = c, failures = f, slow = sl, at = at, stale = stale }
end

-- Every instance's report; a corrupt entry is described (and with `repair`
-- deleted). The third result says whether the key existed.
local function load_reports(key, repair)
  local raw, t = hash_fields(key)
  if raw == nil then
    if repair then redis.call('DEL', key) end
    return {}, 'corrupt value at `' .. key .. '` (a ' .. t .. ' where a hash was expected), deleted'
  end
  if #raw == 0 then return {}, nil, false end
  local reps, bad = {}, nil
  for i = 1, #raw, 2 do
    local r = parse_report(raw[i + 1])
    if r then
      reps[raw[i]] = r
    else
      if repair then redis.call('HDEL', key, raw[i]) end
      bad = 'corrupt report of `' .. shown(raw[i]) .. '` at `' .. key .. '` (' .. shown(raw[i + 1]) .. '), deleted'
    end
  end
  return reps, bad, true
end

local function encode_report(r)
  return struct.pack(REPORT, r.epoch, r.calls, r.failures, r.slow, r.at, r.stale)
end

-- The fleet's view (MemoryStore's Entry::view): the live reports of this epoch.
local function view(st, reps, now, live)
  local calls, failures, slow, n = 0, 0, 0, 0
  for id, r in pairs(reps) do
    if r.epoch == st.epoch and alive(id, r, now, live) then
      calls = calls + r.calls
      failures = failures + r.failures
      slow = slow + r.slow
      n = n + 1
    end
  end
  local ovr = -1
  if st.override_until > 0 then ovr = math.max(0, st.override_until - now) end
  return { st.state, st.epoch, math.max(0, st.open_until - now), calls, failures, slow, n, ovr }
end

-- Publishes a transition: "1,<view>,<manual>;" then name, actor and reason as
-- <length>:<bytes>.
local function publish(channel, name, v, actor, reason, manual)
  local head = table.concat({ '1', v[1], fmt(v[2]), fmt(v[3]), fmt(v[4]), fmt(v[5]), fmt(v[6]),
    fmt(v[7]), fmt(v[8]), manual and '1' or '0' }, ',')
  redis.call('PUBLISH', channel, head .. ';' .. #name .. ':' .. name .. #actor .. ':' .. actor
    .. #reason .. ':' .. reason)
end

local function reply(v, extra, detail)
  local out = {}
  if extra ~= nil then out[1] = extra end
  for i = 1, #v do out[#out + 1] = v[i] end
  out[#out + 1] = detail or ''
  return out
end
