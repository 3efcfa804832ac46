"""Every configuration key is read by something: a key nobody reads is a promise the
stack does not keep (the issue found *_LIVENESS_INTERVAL documented and never read)."""

from __future__ import annotations

import re
from pathlib import Path

from unistack.configkeys import KEYS, PROBED_SERVICES, SERVICE_PREFIXES
from unistack.keys.providers import PROVIDERS

PROVIDER_KEYS = {key for p in PROVIDERS for key in (*p.keys, p.base_key)}

ROOT = Path(__file__).resolve().parents[2]


def sources() -> str:
    files = [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("scripts").iterdir(),
             ROOT / "supervisord.conf", ROOT / "prometheus.yml"]
    return "\n".join(path.read_text() for path in files if path.is_file())


def is_read(name: str, text: str) -> bool:
    probe = next((s for s in PROBED_SERVICES
                  if re.match(rf"{s}_(LIVENESS|READINESS)_", name)), None)
    if probe and ("probe_timing(" in text or "probes[" in text):
        return True  # read through Settings.probe_timing(service, kind)
    if name.removesuffix("_HOST") in SERVICE_PREFIXES and "settings.host(" in text:
        return True  # read through Settings.host(port_key): probes, facts, scrape targets
    if name in PROVIDER_KEYS:
        return True  # read through settings.value() by unistack.keys, from its table
    return bool(re.search(rf"settings\.{name.lower()}\b|%\(ENV_{name}\)s|\.{name.lower()}\b",
                          text))


def test_every_key_is_read_by_some_code() -> None:
    text = sources()
    unread = [key.name for key in KEYS if not is_read(key.name, text)]
    assert unread == []
