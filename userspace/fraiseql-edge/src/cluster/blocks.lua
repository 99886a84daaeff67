-- Writes one block change to the shared set and tells every node, in one
-- step and in the Redis server's clock (the nodes' clocks need not agree).
--
-- KEYS[1]  the sorted set of blocks: member = client address,
--          score = expiry in ms of the server's clock (+inf: no expiry);
--          the same name is the channel changes are published on
-- ARGV[1]  "block" or "unblock"
-- ARGV[2]  the client address
-- ARGV[3]  the block's TTL in ms, or "" for a block without expiry
-- ARGV[4]  the message to publish (JSON, read by the nodes)
--
-- Returns the number of nodes the message reached.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Expired blocks go whenever the set is written.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'block' then
  local score = '+inf'
  if ARGV[3] ~= '' then
    score = now + tonumber(ARGV[3])
  end
  redis.call('ZADD', KEYS[1], score, ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return redis.call('PUBLISH', KEYS[1], ARGV[4])
