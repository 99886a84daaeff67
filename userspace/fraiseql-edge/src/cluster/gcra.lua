-- GCRA in one step, atomically: the same arithmetic as the daemon's local
-- limiter (ratelimit.rs), in microseconds of the Redis server's clock, so
-- every node agrees on time.
--
-- KEYS[1]  the key's theoretical arrival time (TAT), µs since the epoch
-- ARGV[1]  interval: µs between two requests at the sustained rate
-- ARGV[2]  tolerance: how far ahead of now the TAT may run (interval × (burst − 1))
-- ARGV[3]  n: requests counted at once (all pass or none)
--
-- Returns {allowed (1/0), TAT − now after the call, TAT − now before it}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local cost = interval * n
local new_tat = tat
local allowed = 0
if (tat - now) + (cost - interval) <= tolerance then
  allowed = 1
  new_tat = tat + cost
  -- Kept as long as it matters, then forgotten: an idle key is a fresh one.
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return {allowed, new_tat - now, tat - now}
