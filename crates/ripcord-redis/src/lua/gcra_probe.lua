
-- Test-only: gcra_decide on explicit values, to check it against Rust.
-- ARGV: tat, now, t, burst, n, max_wait. Returns admitted, amount, new tat.
local a, amount, tat = gcra_decide(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
return { a, amount, string.format('%.0f', tat) }
