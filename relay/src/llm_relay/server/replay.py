"""Replay protection that holds across restarts and replicas, with no database shared between them.

An envelope is refused as a replay by the process that accepted it (its in-memory `ReplayCache`, kept
until the envelope's timestamp refuses it). What that cache cannot see: the same envelope sent to another
replica, or to this one after a restart. So every envelope also names the relay process it is meant for,
its *epoch*: 16 random bytes drawn when the process starts (kept across SIGHUP reloads, gone with the
process). An envelope naming another epoch - one from before a restart, one for another replica, or none -
is not opened further: the answer, sealed like every other, is `409 envelope_epoch` carrying this
process's epoch in `X-Relay-Epoch`, and the client seals the request again for it. Hence:

- a replica refuses what another replica accepted (other epoch), and a restarted relay refuses what it
  accepted before (the old epoch died with the old process);
- nothing is persisted and nothing is shared: a replica is never trusted with another one's memory;
- the cost: a client's first request to a process takes one extra round trip (the 409), and behind a
  balancer that spreads single requests over N replicas, a request whose epoch belongs to another
  replica is resent; the client tries up to `client.transport.EPOCH_TRIES` times (relay/docs/envelope.md).

The epoch is no secret (it travels inside the sealed answer only because every answer is sealed); its
only property is that no two processes share one, which 128 random bits give.
"""

from __future__ import annotations

import os

from llm_relay import envelope

from .errors import RelayError

EPOCH_HEADER = "X-Relay-Epoch"
STALE_CODE = "envelope_epoch"


def new_epoch() -> str:
    return os.urandom(16).hex()


def admit(state: object, epoch: str, replay_id: bytes, expires: float) -> None:
    """Accept an authenticated envelope once: RelayError (sealed by the caller) for another process's
    epoch (409, names ours) or an envelope this process has already accepted (403)."""
    current: str = state.epoch  # type: ignore[attr-defined]
    if epoch != current:
        raise RelayError(
            409,
            STALE_CODE,
            "this envelope is for another relay process (restarted, or another replica): "
            "seal it again for the epoch in X-Relay-Epoch",
            {EPOCH_HEADER: current},
        )
    if not state.replay.check_and_add(replay_id, expires):  # type: ignore[attr-defined]
        raise RelayError(403, envelope.EnvelopeReplayed.code, "envelope already used (replay)")
