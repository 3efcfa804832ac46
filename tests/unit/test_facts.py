"""hub.facts: the figures of the Redis and Prometheus cards, from what each one answers."""

from __future__ import annotations

from unistack.hub.facts import prometheus_facts, redis_facts
from unistack.probes import info_fields

INFO = """# Memory\r
used_memory:1254784\r
maxmemory:1073741824\r
# Persistence\r
rdb_last_save_time:1796520000\r
rdb_last_bgsave_status:err\r
aof_enabled:1\r
aof_last_write_status:ok\r
# Clients\r
connected_clients:4\r
# Keyspace\r
db0:keys=10,expires=2,avg_ttl=0\r
db3:keys=5,expires=0,avg_ttl=0\r
"""


def test_redis_facts_sum_every_database_and_keep_the_save_state() -> None:
    assert redis_facts(info_fields(INFO)) == {
        "used_memory_bytes": 1254784, "maxmemory_bytes": 1073741824, "keys": 15,
        "last_save": 1796520000, "rdb_last_bgsave_status": "err", "aof_enabled": True,
        "aof_last_write_status": "ok", "connected_clients": 4}


def test_an_empty_redis_has_no_keys() -> None:
    assert redis_facts(info_fields("used_memory:1\r\naof_enabled:0\r\n"))["keys"] == 0


def test_targets_not_scraped_yet_are_not_counted_as_down() -> None:
    document = {"data": {"activeTargets": [{"health": "up"}, {"health": "up"},
                                           {"health": "unknown"}, {"health": "down"}]}}
    assert prometheus_facts(document) == {"targets_up": 2, "targets_unknown": 1,
                                          "targets_total": 4}
