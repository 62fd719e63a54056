"""Taking requests from a function's shared queue, and giving back those a dead instance took.

Requests are pushed on the left of ``fi:{fn}:queue`` and taken from the right. Taking moves them, in
one atomic step, onto the taker's ``fi:{fn}:claimed:{inst}`` list, so a request is always in exactly one
of the two lists until its reply is sent (the reply and the claimed list's deletion share one
MULTI). Reaping an instance whose heartbeat stopped moves its claimed list back to the taking end of
the queue, oldest first, in one Lua script that first re-checks the heartbeat, so two reapers never
both move it. Everything here is one round trip.
"""

from __future__ import annotations

from typing import Any

from batcher import keys

# KEYS: queue, claimed. ARGV: most to take. Returns {taken..., } and the queue's length after.
_TAKE = """
local taken = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if taken and #taken > 0 then redis.call('LPUSH', KEYS[2], unpack(taken)) else taken = {} end
return {taken, redis.call('LLEN', KEYS[1])}
"""

# KEYS: claimed, queue. Moves everything back, oldest nearest the taking end. Returns how many.
_GIVE_BACK = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do n = n + 1 end
return n
"""

# KEYS: instances, claimed, queue, facts, exec, inbox, stats. ARGV: instance, cutoff.
# Returns -1 when the instance beat again (or is gone), else how many requests went back.
_REAP = """
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or tonumber(beat) > tonumber(ARGV[2]) then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do n = n + 1 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
if n > 0 then redis.call('HINCRBY', KEYS[7], 'reclaimed', n) end
return n
"""


class Claims:
    """The three scripts, registered once on a client."""

    def __init__(self, client: Any, fn: str, inst: str) -> None:
        self.fn = fn
        self.inst = inst
        self.queue = keys.queue(fn)
        self.claimed = keys.claimed(fn, inst)
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        self._reap = client.register_script(_REAP)

    def take(self, client: Any, most: int) -> tuple[list[bytes], int]:
        """Up to ``most`` requests without blocking, oldest first, and the queue's length after."""
        taken, left = self._take(keys=[self.queue, self.claimed], args=[most], client=client)
        return list(taken), int(left)

    def wait_one(self, client: Any, timeout: float) -> bytes | None:
        """Block up to ``timeout`` seconds for one request (claimed like ``take``)."""
        return client.blmove(self.queue, self.claimed, max(timeout, 0.001), "RIGHT", "LEFT")

    def give_back_own(self, client: Any) -> int:
        """Put this instance's claimed requests back in the queue (after losing Redis, or on exit)."""
        return int(self._give_back(keys=[self.claimed, self.queue], client=client))

    def reap(self, client: Any, inst: str, cutoff: float) -> int:
        """Remove ``inst`` if its last beat is before ``cutoff``, giving its requests back; -1 if it lives."""
        fn = self.fn
        return int(self._reap(keys=[keys.instances(fn), keys.claimed(fn, inst), self.queue,
                                    keys.instance(fn, inst), keys.exec_times(fn, inst), keys.inbox(inst),
                                    keys.stats(fn)], args=[inst, repr(cutoff)], client=client))
