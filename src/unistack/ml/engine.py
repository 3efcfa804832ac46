"""The engine's worker: reads requests from a Redis stream consumer group, micro-batches
them, predicts once per model and answers each request on its reply list.

No request is lost: an entry stays in the group's pending list until the script that
pushes its reply also XACKs it (all or nothing), so a worker killed mid-batch leaves
its entries pending; the next worker (the same consumer name) reads its own pending
entries first, and XAUTOCLAIM takes entries of dead consumers idle past a threshold.
An entry delivered MAX_DELIVERIES times (a poison request) goes to the dead-letter
stream with the reason; an unparseable one goes there at once. Requests past their
deadline get an `expired` reply and never reach the model. Bad input never ends the loop.

The loop's stream commands go down a connection of its own (`Link`), so that a commit and
the next read leave in one write: Redis holds the read while the engine updates its
metrics, and hands it the next request the moment it arrives, instead of a round trip
after the commit's reply.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import redis

from unistack.ml import protocol
from unistack.ml.keys import DEAD_LETTERS, GROUP, STREAM, STREAM_RESET
from unistack.ml.models import ModelStore
from unistack.ml.protocol import Request, RequestError

log = logging.getLogger("unistack.ml")

_RESET_TTL_S = 3600

Entry = tuple[bytes, dict[bytes, bytes]]
# KEYS: the stream, then one reply list per reply. ARGV: group, reply TTL, the number of
# replies, the replies, then every entry id answered. Redis runs a script atomically, and
# EVAL (not EVALSHA) keeps working after a Redis restart emptied its script cache.
_COMMIT = """
local group, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, n do
  redis.call('RPUSH', KEYS[i + 1], ARGV[3 + i])
  redis.call('EXPIRE', KEYS[i + 1], ttl)
end
for first = 4 + n, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  redis.call('XACK', KEYS[1], group, unpack(ARGV, first, last))
  redis.call('XDEL', KEYS[1], unpack(ARGV, first, last))
end
return n
"""
# A batch this large already amortises the fixed cost of a predict call (~0.3 ms):
# waiting for more would only add a round trip.
_ENOUGH_ROWS = 64
_PROBE_EVERY = 32


def _rows(entries: list[Entry]) -> int:
    """Rows announced by the entries' shape fields (a JSON request counts as one)."""
    total = 0
    for _, fields in entries:
        shape = fields.get(b"shape", b"1,")
        head = shape.split(b",", 1)[0]
        total += int(head) if head.isdigit() else 1
    return total


class EngineConfig(NamedTuple):
    """Built from Settings only (ml.server.engine_config): no defaults of its own."""

    consumer: str
    max_batch_rows: int
    max_wait_us: int  # how long a partial batch waits for more requests
    block_ms: int  # how long one read blocks when the stream is empty
    claim_idle_ms: int  # pending this long in a dead consumer: claim it
    claim_every_s: float
    max_deliveries: int
    reply_ttl_s: int
    dead_letter_maxlen: int


class BatchTiming(NamedTuple):
    """One answered batch, as the engine hands it to its observer (the metrics)."""

    enqueued_ms: Sequence[int]  # per entry: the millisecond part of its stream id
    read_at: float  # epoch seconds the batch was read
    committed_at: float  # epoch seconds its replies were committed
    rows: int  # rows predicted (0 when nothing reached a model)
    predict_s: float  # seconds spent in the model


class Outcome(NamedTuple):
    entry_id: bytes
    request_id: str
    payload: bytes | None  # None: dead-lettered, no reply possible
    status: str


class Link:
    """The loop's own connection to Redis: several commands sent in one write, each reply
    read when it is wanted (a redis-py pipeline reads them all before it returns). A
    failed command leaves replies unread: the caller drops the connection (`drop`), and
    the next command connects again."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        # RESP3 always, whatever the client was given: one reply shape to read (_entries).
        self._connection = pool.connection_class(**{**pool.connection_kwargs, "protocol": 3})

    def send(self, *commands: tuple[Any, ...]) -> None:
        self._connection.send_packed_command([protocol.packed(commands)])

    def reply(self) -> Any:
        """The next reply, as Redis sent it (an error reply raises redis.ResponseError)."""
        return self._connection.read_response()

    def call(self, *command: Any) -> Any:
        self.send(command)
        return self.reply()

    def drop(self) -> None:
        self._connection.disconnect()


class Engine:
    def __init__(self, client: redis.Redis, models: ModelStore, config: EngineConfig) -> None:
        self._redis = client
        self._link = Link(client)
        self._ahead = False  # a read was sent behind the last commit: its reply is next
        self._closing = False  # finish(): no read is sent ahead any more
        self._models = models
        self._config = config
        self._clock: Callable[[], float] = time.time
        self._next_claim = 0.0
        self._own_pending = True  # first read our own pending entries (a restart)
        self._had_group = False  # seen the stream and group: their absence is a reset
        # Whether requests arrive together: a lone request is answered without first asking
        # the stream for more (a round trip that finds nothing when one client sends in
        # turn); every _PROBE_EVERY-th lone request asks anyway, to notice company.
        self._crowded = False
        self._lone = 0
        self.progress = time.monotonic()  # the heartbeat: the loop turned
        self.counts: dict[str, int] = defaultdict(int)
        self.on_batch: Callable[[BatchTiming], None] = lambda timing: None
        self.on_reset: Callable[[str], None] = lambda detail: None
        self._predict_s = 0.0  # time in the model during the current batch

    @property
    def max_batch_rows(self) -> int:
        return self._config.max_batch_rows

    def set_max_batch_rows(self, rows: int) -> None:
        """The GPU memory manager shrinks (and restores) the batch under memory pressure."""
        self._config = self._config._replace(max_batch_rows=rows)

    def ensure_group(self, why: str = "found missing: a FLUSHALL, a restore or Redis "
                     "restarted on an empty dataset") -> None:
        """Create the request stream and its group if missing. Missing after this engine
        had them is a reset (an operator's FLUSHALL, a restore, Redis restarted empty),
        not a fault of the engine: it is reported once and serving carries on."""
        try:
            self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            if self._had_group:
                self._reset(why)
        self._had_group = True

    def _reset(self, why: str) -> None:
        self._own_pending = False  # whatever was pending went with the stream
        self._redis.set(STREAM_RESET, int(self._clock() * 1000), ex=_RESET_TTL_S)
        self.counts["stream_resets"] += 1
        self.on_reset(f"the request stream {STREAM} was deleted under the engine ({why}); "
                      "recreated it with its consumer group and carried on serving")

    # --- reading ------------------------------------------------------------------

    def step(self) -> int:
        """Read, answer and acknowledge one batch; the number of entries handled."""
        self.progress = time.monotonic()
        try:
            return self._step()
        except redis.ResponseError as exc:
            self._lost()
            if not stream_gone(exc):
                raise
            self.ensure_group(why=str(exc))
            return 0
        except BaseException:
            self._lost()
            raise

    def finish(self) -> int:
        """On a stop: answer what the read sent ahead brings (it waits at most block_ms),
        so that no request is left delivered to this engine and unanswered."""
        self._closing = True
        return self.step() if self._ahead else 0

    def _lost(self) -> None:
        """A command failed: replies may be left unread on the link, and entries read but
        not answered stay pending in the group. Drop the connection, and read this
        consumer's pending entries first when serving resumes."""
        self._link.drop()
        self._ahead = False
        self._own_pending = True

    def _step(self) -> int:
        entries, suspects = self._read()
        if not entries:
            return 0
        read_at, rows_before, self._predict_s = self._clock(), self.counts["rows"], 0.0
        self._commit(self._answer(entries, suspects))
        self.progress = time.monotonic()
        enqueued = [int(entry_id.split(b"-", 1)[0]) for entry_id, _ in entries]
        self.on_batch(BatchTiming(enqueued, read_at, self._clock(),
                                  self.counts["rows"] - rows_before, self._predict_s))
        return len(entries)

    def _read(self) -> tuple[list[Entry], set[bytes]]:
        """Entries to handle, and those delivered before (their counts need a look)."""
        if self._ahead:  # the read sent behind the last commit
            self._ahead = False
            return self._batch(_entries(self._link.reply())), set()
        if self._own_pending:
            mine = self._group_read("0", block=None)
            self._own_pending = bool(mine)
            if mine:
                return mine, {entry_id for entry_id, _ in mine}
        if self._claim_due():
            self._next_claim = time.monotonic() + self._config.claim_every_s
            claimed = self._claim()
            if claimed:
                return claimed, {entry_id for entry_id, _ in claimed}
        return self._batch(self._group_read(">", block=self._config.block_ms)), set()

    def _claim_due(self) -> bool:
        return time.monotonic() >= self._next_claim

    def _read_command(self, start: str, block: int | None) -> tuple[Any, ...]:
        waiting = ("BLOCK", block) if block is not None else ()
        return ("XREADGROUP", "GROUP", GROUP, self._config.consumer,
                "COUNT", self._config.max_batch_rows, *waiting, "STREAMS", STREAM, start)

    def _group_read(self, start: str, block: int | None) -> list[Entry]:
        return _entries(self._link.call(*self._read_command(start, block)))

    def _batch(self, entries: list[Entry]) -> list[Entry]:
        """To the first ENTRIES, gather more for at most max_wait_us, unless they already
        hold enough rows to amortise a predict call, or one request came alone and
        requests have been coming alone (see _crowded)."""
        if not entries or _rows(entries) >= min(_ENOUGH_ROWS, self._config.max_batch_rows):
            return entries
        if len(entries) > 1:
            self._crowded = True
        elif not self._crowded:
            self._lone += 1
            if self._lone % _PROBE_EVERY:
                return entries
        deadline = time.monotonic() + self._config.max_wait_us / 1e6
        found = False
        while len(entries) < self._config.max_batch_rows and time.monotonic() < deadline:
            more = self._group_read(">", block=None)
            if not more:
                break
            entries, found = entries + more, True
        self._crowded = found or len(entries) > 1
        return entries

    def _claim(self) -> list[Entry]:
        reply: Any = self._redis.xautoclaim(STREAM, GROUP, self._config.consumer,
                                            min_idle_time=self._config.claim_idle_ms,
                                            start_id="0-0", count=self._config.max_batch_rows)
        claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if claimed:
            self.counts["reclaimed"] += len(claimed)
            log.warning("claimed %d requests left pending by a dead consumer", len(claimed))
        return claimed

    def _deliveries(self, suspects: set[bytes]) -> dict[bytes, int]:
        if not suspects:
            return {}
        pending: Any = self._redis.xpending_range(STREAM, GROUP, min=min(suspects),
                                                  max=max(suspects), count=len(suspects) * 4)
        return {p["message_id"]: int(p["times_delivered"]) for p in pending
                if p["message_id"] in suspects}

    # --- answering ----------------------------------------------------------------

    def _answer(self, entries: list[Entry], suspects: set[bytes]) -> list[Outcome]:
        deliveries = self._deliveries(suspects)
        outcomes: list[Outcome] = []
        valid: list[tuple[bytes, Request]] = []
        now_ms = int(self._clock() * 1000)
        for entry_id, fields in entries:
            outcome, request = self._screen(entry_id, fields, deliveries.get(entry_id, 1), now_ms)
            if outcome:
                outcomes.append(outcome)
            elif request:
                valid.append((entry_id, request))
        return outcomes + self._predict(valid)

    def _screen(self, entry_id: bytes, fields: dict[bytes, bytes], delivered: int,
                now_ms: int) -> tuple[Outcome | None, Request | None]:
        request_id = fields.get(b"id", b"").decode(errors="replace")
        if delivered > self._config.max_deliveries:
            why = f"delivered {delivered} times without an answer (a poison request?)"
            return self._dead(entry_id, request_id, fields, why), None
        try:
            request = protocol.parse(fields)
        except RequestError as exc:
            if not protocol.REQUEST_ID.fullmatch(request_id):
                return self._dead(entry_id, request_id, fields, str(exc)), None
            return self._reject(entry_id, request_id, protocol.INVALID, str(exc)), None
        if request.deadline_ms < now_ms:
            late = now_ms - request.deadline_ms
            return self._reject(entry_id, request_id, protocol.EXPIRED,
                                f"deadline passed {late} ms before the engine read it"), None
        return None, request

    def _predict(self, valid: list[tuple[bytes, Request]]) -> list[Outcome]:
        groups: dict[tuple[str, int | None], list[tuple[bytes, Request]]] = defaultdict(list)
        for entry_id, request in valid:
            groups[(request.model, request.version)].append((entry_id, request))
        outcomes: list[Outcome] = []
        for (model, version), members in groups.items():
            outcomes += self._predict_group(model, version, members)
        return outcomes

    def _predict_group(self, model: str, version: int | None,
                       members: list[tuple[bytes, Request]]) -> list[Outcome]:
        loaded = self._models.get(model, version)
        if loaded is None:
            known = ", ".join(self._models.names()) or "none loaded"
            pinned = f" version {version}" if version is not None else ""
            why = f"unknown model {model!r}{pinned} (serving: {known})"
            return [self._reject(e, r.id, protocol.INVALID, why) for e, r in members]
        fit: list[tuple[bytes, Request]] = []
        outcomes: list[Outcome] = []
        for entry_id, request in members:
            try:
                protocol.check_features(request, loaded.n_features)
                fit.append((entry_id, request))
            except RequestError as exc:
                outcomes.append(self._reject(entry_id, request.id, protocol.INVALID, str(exc)))
        if not fit:
            return outcomes
        started = time.perf_counter()
        predictions = loaded.backend.predict(np.concatenate([r.rows for _, r in fit]))
        self._predict_s += time.perf_counter() - started
        header = {"status": protocol.OK, "model": model, "version": loaded.version.version}
        prefix = protocol.ok_prefix(model, loaded.version.version)
        offset = 0
        for entry_id, request in fit:
            rows = request.rows.shape[0]
            values = predictions[offset:offset + rows]
            payload = (protocol.encode_reply({**header, "id": request.id}, values, True)
                       if request.as_json else protocol.encode_ok(prefix, request.id, values))
            outcomes.append(Outcome(entry_id, request.id, payload, protocol.OK))
            offset += rows
        self.counts["batches"] += 1
        self.counts["rows"] += offset
        return outcomes

    def _reject(self, entry_id: bytes, request_id: str, status: str, why: str) -> Outcome:
        payload = protocol.encode_reply({"id": request_id, "status": status, "error": why},
                                        None, False)
        return Outcome(entry_id, request_id, payload, status)

    def _dead(self, entry_id: bytes, request_id: str, fields: dict[bytes, bytes],
              why: str) -> Outcome:
        log.warning("dead-lettering %s (request %r): %s", entry_id.decode(), request_id, why)
        self.counts["dead_lettered"] += 1
        record: dict[Any, Any] = {**fields, b"reason": why.encode(), b"entry": entry_id}
        self._redis.xadd(DEAD_LETTERS, record, maxlen=self._config.dead_letter_maxlen,
                         approximate=True)
        if protocol.REQUEST_ID.fullmatch(request_id):
            return self._reject(entry_id, request_id, protocol.FAILED, why)
        return Outcome(entry_id, request_id, None, "dead")

    def _commit(self, outcomes: list[Outcome]) -> None:
        """Replies and their acknowledgement in one script: all or nothing, one command.
        The next read goes in the same write when it would be a plain blocking one (no
        pending entries of this consumer to read again, no claim due)."""
        replies = [o for o in outcomes if o.payload is not None]
        keys = [protocol.REPLY_PREFIX + o.request_id for o in replies]
        args: list[Any] = [GROUP, self._config.reply_ttl_s, len(replies)]
        args += [o.payload for o in replies]
        args += [o.entry_id for o in outcomes]
        commit = ("EVAL", _COMMIT, 1 + len(keys), STREAM, *keys, *args)
        ahead = not (self._closing or self._own_pending or self._claim_due())
        if ahead:
            self._link.send(commit, self._read_command(">", self._config.block_ms))
        else:
            self._link.send(commit)
        self._link.reply()  # the commit's; a refusal raises, and step() drops the link
        self._ahead = ahead
        for outcome in outcomes:  # answered: a refused commit answered nothing
            self.counts[outcome.status] += 1


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply on one stream, as Redis sends it in RESP3 (a
    map of stream to entries); an entry deleted while pending has no fields and is left
    out."""
    if not reply:
        return []
    (found,) = reply.values()
    return [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
            for entry_id, flat in found if flat]


def stream_gone(exc: redis.ResponseError) -> bool:
    """Redis's words for a stream or group that no longer exists."""
    text = str(exc)
    return text.startswith("NOGROUP") or "no longer exists" in text
