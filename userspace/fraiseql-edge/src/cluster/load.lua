-- The blocks in force, with what is left of each, in the Redis server's
-- clock.
--
-- KEYS[1]  the sorted set of blocks (see blocks.lua)
-- KEYS[2]  the set's epoch: a value that changes when Redis lost its data
-- ARGV[1]  the epoch to set when there is none (a fresh random value)
--
-- Returns {epoch, {address, remaining ms (-1: no expiry), address, …}}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[1])
  epoch = ARGV[1]
end
local out = {}
for i = 1, #entries, 2 do
  out[#out + 1] = entries[i]
  local score = entries[i + 1]
  if score == 'inf' or score == '+inf' then
    out[#out + 1] = -1
  else
    out[#out + 1] = math.max(1, math.floor(tonumber(score) - now))
  end
end
return {epoch, out}
