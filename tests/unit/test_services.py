"""services: every order and priority derives from the registry's dependency graph."""

from __future__ import annotations

import pytest

from unistack.services import (
    REGISTRY,
    ProbeSpec,
    RegistryError,
    ServiceSpec,
    by_name,
    priorities,
    start_order,
    stop_order,
)

Registry = tuple[ServiceSpec, ...]


def spec(name: str, *depends_on: str, autostart: bool = False) -> ServiceSpec:
    probe = ProbeSpec("http", "/health")
    return ServiceSpec(name=name, port_key="HUB_PORT", group="test", critical=True,
                       liveness=probe, readiness=probe, depends_on=depends_on,
                       autostart=autostart)


# Declared out of order on purpose: the orders must come from the graph, not the tuple.
DIAMOND: Registry = (
    spec("web", "api"),
    spec("hub", autostart=True),
    spec("api", "db", "cache"),
    spec("cache", "db"),
    spec("db"),
    spec("batch", "db"),
)


def edges(registry: Registry) -> list[tuple[str, str]]:
    """(dependent, dependency) for every declared dependency."""
    return [(s.name, dep) for s in registry for dep in s.depends_on]


def names(specs: list[ServiceSpec]) -> list[str]:
    return [s.name for s in specs]


@pytest.mark.parametrize("registry", [DIAMOND, REGISTRY], ids=["diamond", "real"])
def test_start_order_puts_dependencies_first_and_autostart_last(registry: Registry) -> None:
    order = names(start_order(registry))
    assert sorted(order) == sorted(s.name for s in registry)
    for dependent, dependency in edges(registry):
        assert order.index(dependency) < order.index(dependent)
    autostart = [s.name for s in registry if s.autostart]
    assert order[-len(autostart):] == autostart


@pytest.mark.parametrize("registry", [DIAMOND, REGISTRY], ids=["diamond", "real"])
def test_stop_order_is_autostart_first_then_reverse_start_order(registry: Registry) -> None:
    order = names(stop_order(registry))
    managed = [n for n in names(start_order(registry)) if n != "hub"]
    assert order == ["hub", *reversed(managed)]
    for dependent, dependency in edges(registry):
        assert order.index(dependent) < order.index(dependency)


@pytest.mark.parametrize("registry", [DIAMOND, REGISTRY], ids=["diamond", "real"])
def test_priorities_rise_along_every_dependency_and_hub_is_highest(registry: Registry) -> None:
    ranks = priorities(registry)
    assert set(ranks) == {s.name for s in registry}
    for dependent, dependency in edges(registry):
        assert ranks[dependent] > ranks[dependency]
    others = [rank for name, rank in ranks.items() if name != "hub"]
    assert ranks["hub"] > max(others)
    assert len(set(others)) == len(others)


def test_priorities_follow_start_order() -> None:
    ranks = priorities(DIAMOND)
    managed = [n for n in names(start_order(DIAMOND)) if n != "hub"]
    assert sorted(managed, key=ranks.__getitem__) == managed


def test_hub_stays_highest_with_many_services() -> None:
    chain = [spec("s0")] + [spec(f"s{i}", f"s{i - 1}") for i in range(1, 9)]
    ranks = priorities((*chain, spec("hub", autostart=True)))
    assert ranks["hub"] > max(rank for name, rank in ranks.items() if name != "hub")


def test_unknown_dependency_is_a_registry_error_naming_both() -> None:
    with pytest.raises(RegistryError, match=r"api depends on unknown service\(s\) \['ghost'\]"):
        start_order((spec("db"), spec("api", "db", "ghost")))


@pytest.mark.parametrize(
    "registry",
    [(spec("a", "b"), spec("b", "c"), spec("c", "a")), (spec("a", "a"),)],
    ids=["three-cycle", "self"],
)
def test_cycle_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="cycle"):
        start_order(registry)
    with pytest.raises(RegistryError, match="cycle"):
        priorities(registry)


def test_duplicate_names_are_a_registry_error() -> None:
    registry = (spec("db"), spec("api", "db"), spec("db"))
    with pytest.raises(RegistryError, match="duplicate"):
        by_name(registry)
    with pytest.raises(RegistryError, match="duplicate"):
        start_order(registry)


def test_real_registry_names_are_unique_and_each_has_a_port_key() -> None:
    specs = by_name()
    assert list(specs) == [s.name for s in REGISTRY]
    assert all(s.port_key.endswith("_PORT") for s in REGISTRY)
    assert [s.name for s in REGISTRY if s.autostart] == ["hub"]


def test_restart_with_must_name_a_dependency() -> None:
    from dataclasses import replace

    broken = replace(spec("api", "db"), restart_with=("cache",))
    with pytest.raises(RegistryError, match=r"restart_with \['cache'\] must name dependencies"):
        start_order((spec("db"), spec("cache"), broken))
    fine = replace(spec("api", "db"), restart_with=("db",))
    assert [s.name for s in start_order((spec("db"), fine))] == ["db", "api"]
