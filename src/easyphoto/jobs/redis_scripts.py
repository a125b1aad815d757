"""The Lua scripts behind :class:`~easyphoto.jobs.redis_store.RedisJobStore`: each state change of a job
runs as one script, atomically on the Redis server (no other client sees half of it).

``ARGV[1]`` is always the key prefix; the other arguments are named in each script's comment. The
prelude keeps the indexes in step with a job's state (``queued`` sorted set, ``running`` set,
``counts``), appends events and releases a user's training lock when its job ends.
"""

from __future__ import annotations

PRELUDE = """
local P = ARGV[1]
local function k(...) return table.concat({P, ...}, ':') end
local function move(id, old, new)
  if old == new then return end
  if old then redis.call('HINCRBY', k('counts'), old, -1) end
  redis.call('HINCRBY', k('counts'), new, 1)
  if old == 'queued' then redis.call('ZREM', k('queued'), id) end
  if old == 'running' then redis.call('SREM', k('running'), id) end
  if new == 'running' then redis.call('SADD', k('running'), id) end
  if new ~= 'queued' then redis.call('ZREM', k('pending'), id) end
end
local function event(id, now, ev)
  ev['ts'] = tonumber(now)
  redis.call('RPUSH', k('events', id), cjson.encode(ev))
end
local function release(id, kind, user)
  if kind == 'train' and user and user ~= '' then
    local lk = k('lock', 'train', user)
    if redis.call('GET', lk) == id then redis.call('DEL', lk) end
  end
end
local function active_holder(lk)
  local holder = redis.call('GET', lk)
  if not holder then return false end
  local st = redis.call('HGET', k('job', holder), 'state')
  if st == 'queued' or st == 'running' then return holder end
  return false
end
local function take_lock(id, kind, user)
  if kind ~= 'train' or not user or user == '' then return false end
  local lk = k('lock', 'train', user)
  local holder = active_holder(lk)
  if holder and holder ~= id then return holder end
  redis.call('SET', lk, id)
  return false
end
"""

SCRIPTS = {
    # id, kind, user_id, fields (JSON object of strings), now
    "submit": """
local id, kind, user, now = ARGV[2], ARGV[3], ARGV[4], ARGV[6]
local holder = take_lock(id, kind, user)
if holder then return {'busy', holder} end
local fields = cjson.decode(ARGV[5])
for name, value in pairs(fields) do redis.call('HSET', k('job', id), name, value) end
redis.call('ZADD', k('jobs'), now, id)
redis.call('ZADD', k('queued'), now, id)
redis.call('ZADD', k('pending'), now, id)
move(id, false, 'queued')
event(id, now, {type='queued'})
return {'ok', id}
""",
    # id, token, host, pid, now
    "claim": """
local id, now = ARGV[2], ARGV[6]
local key = k('job', id)
local st = redis.call('HGET', key, 'state')
if st ~= 'queued' then return st or 'missing' end
if redis.call('HGET', key, 'token') ~= ARGV[3] then return 'stale' end
redis.call('HSET', key, 'state', 'running', 'started', now, 'updated', now, 'worker_host', ARGV[4],
  'worker_pid', ARGV[5], 'finished', '', 'error', '')
redis.call('HINCRBY', key, 'attempts', 1)
move(id, 'queued', 'running')
event(id, now, {type='running', worker_pid=tonumber(ARGV[5]), worker_host=ARGV[4]})
return 'ok'
""",
    # id, host, pid, state, result (JSON or ''), error, resumable ('1'/'0'), now
    "finish": """
local id, now = ARGV[2], ARGV[9]
local key = k('job', id)
local h = redis.call('HMGET', key, 'state', 'worker_host', 'worker_pid', 'kind', 'user_id')
if h[1] ~= 'running' or h[2] ~= ARGV[3] or h[3] ~= ARGV[4] then return 0 end
redis.call('HSET', key, 'state', ARGV[5], 'result', ARGV[6], 'error', ARGV[7], 'finished', now,
  'updated', now, 'resumable', ARGV[8])
move(id, 'running', ARGV[5])
release(id, h[4], h[5])
local ev = {type=ARGV[5]}
if ARGV[7] ~= '' then ev['error'] = ARGV[7] end
event(id, now, ev)
return 1
""",
    # id, now
    "cancel": """
local id, now = ARGV[2], ARGV[3]
local key = k('job', id)
local h = redis.call('HMGET', key, 'state', 'kind', 'user_id', 'error')
if not h[1] then return 'missing' end
if h[1] == 'queued' or h[1] == 'interrupted' then
  local err = h[4]
  if not err or err == '' then err = 'cancelled' end
  redis.call('HSET', key, 'state', 'cancelled', 'finished', now, 'updated', now, 'cancel_requested', '1',
    'error', err)
  move(id, h[1], 'cancelled')
  release(id, h[2], h[3])
  event(id, now, {type='cancelled'})
elseif h[1] == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1', 'updated', now)
  event(id, now, {type='cancel_requested'})
end
return h[1]
""",
    # id, expected state, params (JSON), token, now
    "resume": """
local id, now = ARGV[2], ARGV[6]
local key = k('job', id)
local h = redis.call('HMGET', key, 'state', 'kind', 'user_id')
if h[1] ~= ARGV[3] then return {'changed'} end
local holder = take_lock(id, h[2], h[3])
if holder then return {'busy', holder} end
redis.call('HSET', key, 'state', 'queued', 'params', ARGV[4], 'token', ARGV[5], 'queued_at', now,
  'updated', now, 'cancel_requested', '0', 'error', '', 'finished', '', 'resumable', '0')
redis.call('ZADD', k('queued'), now, id)
redis.call('ZADD', k('pending'), now, id)
move(id, h[1], 'queued')
event(id, now, {type='queued', resume=cjson.decode(ARGV[4])['resume']})
return {'ok'}
""",
    # id, worker heartbeat key, host, pid, params (JSON), token, reason, max attempts, now
    "requeue_dead": """
local id, now = ARGV[2], ARGV[10]
local key = k('job', id)
local h = redis.call('HMGET', key, 'state', 'worker_host', 'worker_pid', 'attempts', 'kind', 'user_id')
if h[1] ~= 'running' or h[2] ~= ARGV[4] or h[3] ~= ARGV[5] then return '' end
if redis.call('EXISTS', ARGV[3]) == 1 then return '' end
local resume = cjson.decode(ARGV[6])['resume'] == true
if tonumber(h[4] or '0') >= tonumber(ARGV[9]) then
  local rs = '0'
  if resume then rs = '1' end
  redis.call('HSET', key, 'state', 'interrupted', 'finished', now, 'updated', now, 'resumable', rs,
    'error', ARGV[8] .. '; given up after ' .. h[4] .. ' attempts')
  move(id, 'running', 'interrupted')
  release(id, h[5], h[6])
  event(id, now, {type='interrupted', reason=ARGV[8], resumable=resume})
  return 'interrupted'
end
redis.call('HSET', key, 'state', 'queued', 'params', ARGV[6], 'token', ARGV[7], 'queued_at', now,
  'updated', now)
redis.call('ZADD', k('queued'), now, id)
redis.call('ZADD', k('pending'), now, id)
move(id, 'running', 'queued')
event(id, now, {type='requeued', reason=ARGV[8], worker_host=h[2], worker_pid=tonumber(h[3]),
  resume=resume})
return 'queued'
""",
    # id
    "purge": """
local id = ARGV[2]
local key = k('job', id)
local st = redis.call('HGET', key, 'state')
if st ~= 'succeeded' and st ~= 'failed' and st ~= 'cancelled' and st ~= 'interrupted' then return 0 end
redis.call('DEL', key, k('events', id))
redis.call('ZREM', k('jobs'), id)
redis.call('HINCRBY', k('counts'), st, -1)
return 1
""",
}

__all__ = ["PRELUDE", "SCRIPTS"]
