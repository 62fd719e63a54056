"""An instance's presence in Redis: one heartbeat round trip, reaping dead peers, and leaving.

A beat marks the instance alive, refreshes its facts and execution times, adds its arrival counts, reads
its live config and the queue depth, and lists peers whose last beat is older than ``stale_after``; each
of those is then reaped (its claimed requests go back to the queue). Peers on this host are not left to
that rule: one silent for ``suspect_after`` (any one, on the beat an instance starts with, before it takes
anything) has its facts read, and is reaped at once if its process is gone (``batcher.host``). The
server's ``run_id`` is read too: when it changes, Redis restarted and whatever it held may be gone.

A function whose last instance was killed, and that no instance joins again (scaled to zero, deleted),
has nobody left to reap it: ``retire_dead``, run by the autoscaler, removes what its instances left and
sets its keys to expire as a last instance leaving does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import redis

from batcher import host, keys, stats
from batcher.claims import Claims

logger = logging.getLogger(__name__)

# Seconds a peer may be silent before one on this host has its process checked (beats come every 0.5 s).
SUSPECT_AFTER = 1.0


@dataclass(frozen=True)
class Beat:
    """What one heartbeat learned."""

    # The Redis server's run id (changes when it restarts).
    run_id: str
    # Requests waiting in the shared queue.
    depth: int
    # The live config hash of this instance, raw.
    config_fields: Mapping[bytes, bytes]
    # Requests given back to the queue from reaped peers.
    reclaimed: int


def beat(client: Any, claims: Claims, facts: Mapping[str, str], exec_seconds: Mapping[int, float],
         arrivals: Mapping[int, int], now: float, stale_after: float = stats.STALE_AFTER, served: int = 0,
         refused: Mapping[int, int] | None = None, suspect_after: float | None = SUSPECT_AFTER) -> Beat:
    """Heartbeat (with the arrivals counted since the last one, by epoch second, refused ones included;
    ``served``: requests run without passing through the queue; ``refused``: requests refused, by epoch
    second), then reap every peer that stopped beating, or that ran on this host (``facts``: ours, with
    ``host.identity()``), is gone and has been silent for ``suspect_after`` (None: any peer, however recent
    its beat); two round trips, one more when a peer is that silent."""
    fn, inst = claims.fn, claims.inst
    pipe = client.pipeline(transaction=False)
    stats.record_heartbeat(pipe, fn, inst, now, facts, exec_seconds)
    for second, count in arrivals.items():
        stats.record_arrival(pipe, fn, second, count)
    stats.record_served(pipe, fn, inst, served)
    for second, count in (refused or {}).items():
        stats.record_refused(pipe, fn, second, count)
    pipe.hgetall(keys.config(fn, inst))
    pipe.llen(keys.queue(fn))
    pipe.zrangebyscore(keys.instances(fn), "-inf", "+inf" if suspect_after is None else now - suspect_after,
                       withscores=True)
    replies = pipe.execute()
    config_fields, depth, silent = replies[-3], replies[-2], replies[-1]
    peers = [(stats.as_text(peer), float(score)) for peer, score in silent if stats.as_text(peer) != inst]
    cutoff = now - stale_after
    reclaimed = _reap_gone(client, claims, [peer for peer, score in peers if score > cutoff], facts)
    for peer in (peer for peer, score in peers if score <= cutoff):
        moved, dropped = claims.reap(client, peer, cutoff)
        if moved >= 0:
            logger.warning("instance %s of %s stopped beating: removed, %d requests requeued, %d dropped (their "
                           "caller died with it, or they were requeued once before)", peer, fn, moved, dropped)
            reclaimed += moved
    run_id = str(client.info("server").get("run_id", ""))
    return Beat(run_id, int(depth), config_fields, reclaimed)


def _reap_gone(client: Any, claims: Claims, peers: list[str], here: Mapping[str, str]) -> int:
    """Reap those of ``peers`` (silent, not yet stale) whose process on this host is gone; requests requeued."""
    if not peers:
        return 0
    pipe = client.pipeline(transaction=False)
    for peer in peers:
        pipe.hgetall(keys.instance(claims.fn, peer))
    reclaimed = 0
    for peer, raw in zip(peers, pipe.execute()):
        facts = _facts(raw)
        reaped = _reap_if_gone(client, claims, peer, facts, here)
        if reaped is not None:
            moved, dropped = reaped
            logger.warning("instance %s of %s is gone (pid %s on this host): removed at once, %d requests requeued, "
                           "%d dropped (their caller died with it, or they were requeued once before)",
                           peer, claims.fn, facts["pid"], moved, dropped)
            reclaimed += moved
    return reclaimed


def _facts(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {stats.as_text(k): stats.as_text(v) for k, v in raw.items()}


def _reap_if_gone(client: Any, claims: Claims, inst: str, facts: Mapping[str, str],
                  here: Mapping[str, str]) -> tuple[int, int] | None:
    """Reap ``inst`` when ``facts`` name a process on this host that is gone (``host.gone``) and still do as
    it is reaped: (requests given back, dropped), else None."""
    if not host.gone(facts, here):
        return None
    moved, dropped = claims.reap(client, inst, 0.0, (facts["pid"], facts["pid_start"]))
    return None if moved < 0 else (moved, dropped)


def reap_former(client: Any, claims: Claims, here: Mapping[str, str]) -> tuple[int, int] | None:
    """Reap a former process of this very instance whose process on this host is gone (``here``: this one's
    facts), as a peer would: a worker gunicorn restarted keeps the watchdog's instance id, so no peer reaps
    the one that died, and its queued requests, whose callers died with it, would all be taken and run for
    nobody. Call it before the first beat, when no request of this process can be queued yet. Returns
    (requests given back, dropped), or None when the facts name no gone process of another start."""
    facts = _facts(client.hgetall(keys.instance(claims.fn, claims.inst)))
    if (facts.get("pid"), facts.get("pid_start")) == (here.get("pid"), here.get("pid_start")):
        return None
    reaped = _reap_if_gone(client, claims, claims.inst, facts, here)
    if reaped is None:
        return None
    moved, dropped = reaped
    logger.warning("instance %s of %s was restarted (pid %s gone, now %s): %d requests requeued, %d dropped (their "
                   "caller died with it, or they were requeued once before)", claims.inst, claims.fn, facts["pid"],
                   here.get("pid"), moved, dropped)
    return moved, dropped


def leave(client: Any, claims: Claims) -> int:
    """Give back anything claimed and remove this instance's keys; the last instance of its function to leave
    retires it when no peer beat within ``stats.RETIRE_AFTER`` (``retire``: a peer that stopped beating and was
    not reaped yet, its claimed list and the queue would otherwise stay, nobody left to reap them), else sets
    the function's keys to expire (``stats.expire_function``), its name kept listed while silent peers remain
    so that ``retire_dead`` finds them later. A peer silent for only seconds may live (a stalled process, a
    clock behind): its queue, claims and inbox are not the leaver's to drop. Returns how many requests went
    back."""
    moved, _dropped = claims.give_back_own(client)
    fn, inst = claims.fn, claims.inst
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.instances(fn), inst)
    pipe.delete(keys.instance(fn, inst), keys.exec_times(fn, inst), keys.inbox(inst))
    pipe.zcount(keys.instances(fn), time.time() - stats.STALE_AFTER, "+inf")
    left = pipe.execute()[-1]
    if not left and retire(client, fn, time.time(), stats.RETIRE_AFTER) is None:
        stats.expire_function(client, fn, listed=bool(client.zcard(keys.instances(fn))))
    return moved


def retire_dead(client: Any, now: float, stale_after: float = stats.STALE_AFTER) -> dict[str, int]:
    """``retire`` every function in ``fi:functions`` none of whose instances beat within ``stale_after``
    of ``now``: {function retired: requests dropped}. Two round trips when every function has a live one."""
    names = [fn for fn in stats.list_functions(client) if keys.valid_name(fn)]
    pipe = client.pipeline(transaction=False)
    for fn in names:
        pipe.zcount(keys.instances(fn), f"({now - stale_after!r}", "+inf")
    retired: dict[str, int] = {}
    for fn, live in zip(names, pipe.execute() if names else []):
        dropped = None if live else retire(client, fn, now, stale_after)
        if dropped is not None:
            retired[fn] = dropped
    return retired


def retire(client: Any, fn: str, now: float, stale_after: float = stats.STALE_AFTER) -> int | None:
    """When no instance of ``fn`` beat within ``stale_after`` of ``now``: remove them, their claimed requests
    and the queued ones (nobody is left to wait for them: counted dropped), and set the function's keys to
    expire (``stats.expire_function``). Returns how many requests were dropped; None, with nothing touched,
    when an instance beats or anything changes meanwhile (WATCH: one starting is never retired)."""
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.instances(fn), keys.queue(fn))
            beats = pipe.zrange(keys.instances(fn), 0, -1, withscores=True)
            if any(float(score) > now - stale_after for _, score in beats):
                return None
            dead = [inst for inst in (stats.as_text(name) for name, _ in beats) if keys.valid_name(inst)]
            claimed = [keys.claimed(fn, inst) for inst in dead]
            if claimed:
                pipe.watch(*claimed)
            dropped = sum(int(pipe.llen(key)) for key in (keys.queue(fn), *claimed))
            pipe.multi()
            pipe.delete(keys.instances(fn), keys.queue(fn), *claimed,
                        *(key for inst in dead for key in (keys.instance(fn, inst), keys.exec_times(fn, inst),
                                                           keys.inbox(inst))))
            if dropped:
                pipe.hincrby(keys.stats(fn), "dropped", dropped)
            stats.expire_function(client, fn, pipe=pipe)
            pipe.execute()
        except redis.WatchError:
            return None
    return dropped
