-- ripcord-redis: GCRA, the same pure decision as ripcord's `Gcra::decide`.
-- Every value in nanoseconds, below 2^53. Returns admitted (1/0), the wait
-- (admitted) or retry-after (refused; -1 = never: more than the burst), and
-- the new theoretical arrival time (unchanged on a refusal).
local function gcra_decide(tat, now, t, burst, n, max_wait)
  local burst_ns = t * burst
  local cost = t * n
  if cost > burst_ns then return 0, -1, tat end
  local new_tat = math.max(tat, now) + cost
  local allow_at = math.max(new_tat - burst_ns, 0)
  if allow_at <= now then return 1, 0, new_tat end
  local wait = allow_at - now
  if wait <= max_wait then return 1, wait, new_tat end
  return 0, wait, tat
end
