"""The records passed between the alert router, the renderer and the outbox."""

from __future__ import annotations

from typing import Any, NamedTuple

SEVERITIES = ("info", "warning", "critical")

# What a Notice tells about its incident.
OPENED = "opened"  # a new incident (or a burst folded into one)
UPDATED = "updated"  # the open incident changed: escalated (LOOPING), a dependent joined
REMINDER = "reminder"  # still unresolved after a reminder interval
RESOLVED = "resolved"  # every part of the incident recovered
SILENCED = "silenced"  # an operator set a silence
SILENCE_ENDED = "silence_ended"  # a silence expired or was lifted
TEST = "test"  # `manage_production.sh alert-test`
DROPPED = "dropped"  # the outbox was full and dropped messages


class Notice(NamedTuple):
    """One thing to tell the operator about one incident."""

    # The incident's id: the fingerprint of its first part and the ts it opened, e.g.
    # "service:redis@1718000000.123" (a fingerprint recurs; an incident id never does).
    incident: str
    kind: str  # one of the kinds above
    severity: str  # one of SEVERITIES (of the incident, not of this notice)
    service: str  # the service the incident is about ("stack" for the whole stack)
    title: str  # one line: "redis crashed"
    since: float  # epoch seconds the incident opened
    ts: float  # epoch seconds of this notice
    what: tuple[str, ...] = ()  # what happened, one line per event folded in
    done: str = ""  # what the hub already did ("killed the hung process; respawned")
    next_step: str = ""  # what the operator should do
    incident_file: str = ""  # path of the incident file, if one was captured
    members: tuple[str, ...] = ()  # services folded into this incident (dependents)
    seq: int = 0  # per incident: 0 for OPENED, then 1, 2, ... (part of the idempotency key)
    resolved: bool = False  # the incident is over (RESOLVED, or an OPENED whose
    #                          incident recovered inside the grouping window)


class Message(NamedTuple):
    """One Slack message waiting in the outbox."""

    key: str  # idempotency key: f"{incident}/{seq}"; putting the same key twice is a no-op
    channel: str  # Slack channel (bot mode) or "webhook"
    incident: str
    action: str  # "post": a new message (a thread reply when thread_of is set);
    #              "update": chat.update of the incident's first message
    payload: dict[str, Any]  # {"text": ..., "blocks": [...]} as Slack takes it
    thread_of: str = ""  # bot mode: the incident whose first message this replies to
