"""Taking requests from a function's shared queue, and giving back those a dead instance took.

Requests are pushed on the left of ``fi:{fn}:queue`` and taken from the right. Taking moves them, in
one atomic step, onto the left of the taker's ``fi:{fn}:claimed:{inst}`` list, so a request is always in
exactly one of the two lists until its reply is sent (the reply and the removal of its batch from the
right of the claimed list share one MULTI). Reaping an instance whose heartbeat stopped (or, on the same
host, whose process is gone: ``batcher.host``) moves its claimed list back to the taking end of the queue,
oldest first, in one Lua script that first re-checks the heartbeat (or that its facts still name that
process), so two reapers never both move it; an instance gives back its own claims the same way when it
starts (its worker died and was restarted under the same name), reconnects or leaves. Only once per
request, and only while someone waits for it:
a request whose caller was connected to the dead instance itself is dropped (nobody is left to answer),
from its claimed list and, when it is reaped, from the queue too,
and one given back before is not given back again; its caller is answered 500 instead (a request that
kills the instance running it would otherwise kill every replica that takes it, until its deadline:
measured with one that ran out of memory, seven replicas in 25 s while the function answered nothing
else). Taking is a list of commands the caller sends with whatever
else it has to say (``batcher.remote_batch`` writes them on a connection of its own and may read the
replies later): the take script runs by its SHA (``EVALSHA``), loaded once per connection to a server
(``load``), because a redis-py ``Script`` checks the server with ``SCRIPT EXISTS`` first, a second round
trip on every take. A server that lost its script cache (a restart) answers ``NOSCRIPT``; ``taken`` then
loads it again and that take simply gets nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis

from batcher import keys

# Most requests taken in one script call (Lua's unpack has a stack limit near 8000).
MAX_TAKE = 1000

# KEYS: queue, claimed. ARGV: most to take. Returns {taken..., } and the queue's length after.
_TAKE = """
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if taken and #taken > 0 then redis.call('LPUSH', KEYS[2], unpack(taken)) else taken = {} end
return {taken, redis.call('LLEN', KEYS[1])}
"""

# Seconds a function remembers which requests it gave back once (longer than any request's deadline).
GIVEN_BACK_TTL = 3600

# Moves a claimed list back to the queue's taking end, oldest nearest it, by the rules in the module
# docstring; returns (given back, dropped). A request is ``token \n {json meta} \n body`` (``wire``), its
# caller's instance in meta's "r". Shared by both scripts below: an instance whose worker died and was
# restarted under the same name gives back its own claims, and must not run a crashing request forever.
_RETURN_CLAIMED = r"""
local function reply_to_of(item)
  local cut = string.find(item, '\n', 1, true)
  local stop = cut and string.find(item, '\n', cut + 1, true)
  local ok, meta = pcall(cjson.decode, stop and string.sub(item, cut + 1, stop - 1) or '')
  local reply_to = (ok and type(meta) == 'table' and meta['r']) or ''
  if type(reply_to) ~= 'string' then reply_to = '' end
  return reply_to, cut and string.sub(item, 1, cut - 1) or ''
end

local function return_claimed(claimed, queue, given, inst, inbox_prefix, ttl)
  local back, dropped = 0, 0
  while true do
    local item = redis.call('LPOP', claimed)
    if not item then break end
    local reply_to, token = reply_to_of(item)
    if reply_to == inst or reply_to == '' then
      dropped = dropped + 1
    elseif redis.call('SADD', given, token) == 0 then
      dropped = dropped + 1
      local reply = cjson.encode({t = token, by = '', err = {status = 500, message =
        'the instance running this request stopped (crashed or killed) twice: not run again'}})
      redis.call('LPUSH', inbox_prefix .. reply_to, reply .. '\n')
      redis.call('EXPIRE', inbox_prefix .. reply_to, 60)
    else
      redis.call('RPUSH', queue, item)
      back = back + 1
    end
  end
  if back > 0 then redis.call('EXPIRE', given, tonumber(ttl)) end
  return back, dropped
end

-- Requests still queued whose caller was connected to ``inst``, a dead instance: nobody can answer them (the
-- connections died with it), and run they only delay the living callers behind them (a killed instance's
-- queued requests were all run by the next instance to start, for nobody). The queue is rebuilt in order
-- without them, in one pass. Not used when an instance gives back its own claims: a request it pushed as
-- Redis was being marked lost may still have its caller waiting.
local function drop_queued(queue, inst)
  local items = redis.call('LRANGE', queue, 0, -1)
  local kept, dropped = {}, 0
  for _, item in ipairs(items) do
    if reply_to_of(item) == inst then dropped = dropped + 1 else kept[#kept + 1] = item end
  end
  if dropped > 0 then
    local ttl = redis.call('PTTL', queue)
    redis.call('DEL', queue)
    for i = 1, #kept, 5000 do
      redis.call('RPUSH', queue, unpack(kept, i, math.min(i + 4999, #kept)))
    end
    if ttl > 0 and #kept > 0 then redis.call('PEXPIRE', queue, ttl) end
  end
  return dropped
end
"""

# KEYS: claimed, queue, stats, given-back set. ARGV: instance, the inbox key prefix, the set's TTL. Returns
# {requests given back, requests dropped}. A request whose caller was connected to this instance is dropped:
# this runs when its worker restarted (its callers' connections died with it), after Redis came back (its
# waiters moved to the in-process queue) or when it leaves (every waiter answered).
_GIVE_BACK = _RETURN_CLAIMED + r"""
local back, dropped = return_claimed(KEYS[1], KEYS[2], KEYS[4], ARGV[1], ARGV[2], ARGV[3])
if dropped > 0 then redis.call('HINCRBY', KEYS[3], 'dropped', dropped) end
return {back, dropped}
"""

# KEYS: instances, claimed, queue, facts, exec, inbox, stats, given-back set. ARGV: instance, cutoff, the
# inbox key prefix, the set's TTL, and the pid and pid_start facts that showed its process gone ("" when
# reaped for its heartbeat). Returns -1 when the instance beat again (or its facts now name another
# process, one restarted under the same name; or it is gone), else {requests given back, requests dropped}.
_REAP = _RETURN_CLAIMED + r"""
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat then return -1 end
if ARGV[5] ~= '' then
  local said = redis.call('HMGET', KEYS[4], 'pid', 'pid_start')
  if said[1] ~= ARGV[5] or said[2] ~= ARGV[6] then return -1 end
elseif tonumber(beat) > tonumber(ARGV[2]) then return -1 end
local back, dropped = return_claimed(KEYS[2], KEYS[3], KEYS[8], ARGV[1], ARGV[3], ARGV[4])
dropped = dropped + drop_queued(KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
if back > 0 then redis.call('HINCRBY', KEYS[7], 'reclaimed', back) end
if dropped > 0 then redis.call('HINCRBY', KEYS[7], 'dropped', dropped) end
return {back, dropped}
"""


class Claims:
    """The three scripts, registered once on a client."""

    def __init__(self, client: Any, fn: str, inst: str) -> None:
        self.fn = fn
        self.inst = inst
        self.queue = keys.queue(fn)
        self.claimed = keys.claimed(fn, inst)
        self._take_sha = hashlib.sha1(_TAKE.encode()).hexdigest()
        self._client = client
        self._give_back = client.register_script(_GIVE_BACK)
        self._reap = client.register_script(_REAP)

    def take(self, most: int, wait: float = 0.0) -> list[tuple[Any, ...]]:
        """The commands of a take: block up to ``wait`` seconds for one request (when ``wait`` > 0), then take
        up to ``most`` in all without blocking; ``taken(replies)`` reads their replies."""
        commands: list[tuple[Any, ...]] = []
        if wait > 0:
            commands.append(("BLMOVE", self.queue, self.claimed, "RIGHT", "LEFT", max(wait, 0.001)))
        rest = min(most, MAX_TAKE) - (1 if wait > 0 else 0)
        if rest > 0:
            commands.append(("EVALSHA", self._take_sha, 2, self.queue, self.claimed, rest))
        return commands

    def release(self, count: int) -> tuple[Any, ...]:
        """The command that drops the ``count`` oldest claimed requests (a batch answered): only those, since
        a take sent ahead may already have claimed the next batch's on the other end of the list."""
        return ("LTRIM", self.claimed, 0, -(count + 1))

    def load(self) -> None:
        """Load the take script on the server (after connecting; again when it answers NOSCRIPT)."""
        self._client.script_load(_TAKE)

    def taken(self, replies: list[Any], most: int, wait: float = 0.0) -> tuple[list[bytes], int | None]:
        """The requests a ``take`` got, oldest first, and the queue length after (None when unknown);
        ``replies`` end with the replies of ``take``'s commands (errors as exception objects), ``most`` and
        ``wait`` as given to ``take``. Raises the first error other than a missing script."""
        got: list[bytes] = []
        left = None
        for reply in replies:
            if isinstance(reply, Exception) and not isinstance(reply, redis.exceptions.NoScriptError):
                raise reply
        rest = min(most, MAX_TAKE) - (1 if wait > 0 else 0)
        if rest > 0:
            if isinstance(replies[-1], redis.exceptions.NoScriptError):
                self.load()
            else:
                taken, left = replies[-1]
                got = list(taken)
            replies = replies[:-1]
        if wait > 0 and replies[-1] is not None:
            got.insert(0, replies[-1])
        return got, None if left is None else int(left)

    def give_back_own(self, client: Any) -> tuple[int, int]:
        """Put this instance's claimed requests back in the queue (on start, after losing Redis, or on exit)
        by the same rules as ``reap``: (requests given back, requests dropped)."""
        fn = self.fn
        got = self._give_back(keys=[self.claimed, self.queue, keys.stats(fn), keys.given_back(fn)],
                              args=[self.inst, keys.inbox_prefix(), GIVEN_BACK_TTL], client=client)
        return int(got[0]), int(got[1])

    def reap(self, client: Any, inst: str, cutoff: float, process: tuple[str, str] | None = None) -> tuple[int, int]:
        """Remove ``inst`` if its last beat is before ``cutoff`` or, given ``process`` (the ``pid`` and
        ``pid_start`` facts that showed its process gone, ``batcher.host``), whatever its last beat, if its
        facts still say so: (requests given back, requests dropped: their caller died with it, or they were
        given back once before); (-1, 0) if it lives."""
        fn = self.fn
        pid, pid_start = process or ("", "")
        got = self._reap(keys=[keys.instances(fn), keys.claimed(fn, inst), self.queue, keys.instance(fn, inst),
                               keys.exec_times(fn, inst), keys.inbox(inst), keys.stats(fn), keys.given_back(fn)],
                         args=[inst, repr(cutoff), keys.inbox_prefix(), GIVEN_BACK_TTL, pid, pid_start],
                         client=client)
        return (-1, 0) if not isinstance(got, list) else (int(got[0]), int(got[1]))
