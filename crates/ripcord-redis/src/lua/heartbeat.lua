
-- heartbeat: this instance is alive; returns every live instance's
-- heartbeat (for the scripts that judge liveness).
-- KEYS[1] = <prefix>:instances   hash: instance -> "at stale"
-- ARGV: instance, stale_after_us, ttl_ms
-- Returns: id, at, stale for each live instance, then the corruption ('' if
-- none) as the last element.
local _, flat, detail = beat(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now_us())
flat[#flat + 1] = detail or ''
return flat
