"""hub.keyreports: `keys verify` results as events (a rejected key a warning naming the
provider, a valid one resolving it), refused when malformed; the record served as the
status document's `keys`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unistack.config import Settings, load_settings
from unistack.event import Kind
from unistack.hub.events import EventLog
from unistack.hub.keyreports import BadReport, KeyReports

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Pq7Zr2Lm9Xc4Vb8Nn3Ty6Uh1Jk5Gf0Ds"


def settings_of(tmp_path: Path, **environ: str) -> Settings:
    return load_settings(environ={"UNISTACK_HOME": str(tmp_path), **environ}, root=ROOT)


def test_each_result_is_an_event_of_its_kind(tmp_path: Path) -> None:
    events = EventLog()
    reports = KeyReports(settings_of(tmp_path, POLYGON_API_KEY=SECRET), events)
    assert reports.report({"results": [
        {"provider": "alpaca", "status": "rejected", "detail": "HTTP 401"},
        {"provider": "polygon", "status": "valid", "detail": f"echoed {SECRET}"},
        {"provider": "unusual_whales", "status": "rate-limited", "detail": "HTTP 429"},
        {"provider": "alpaca", "status": "malformed", "detail": "not sent"}]}) == (
            202, {"recorded": 4})
    seen = [(e["service"], e["kind"], e["severity"], e["detail"]) for e in events.recent()]
    assert seen == [
        ("alpaca", Kind.KEY_REJECTED, "warning", "Alpaca API keys rejected: HTTP 401"),
        ("polygon", Kind.KEY_VALID, "info", "Polygon.io API keys valid"),
        ("unusual_whales", Kind.KEY_UNVERIFIED, "info",
         "Unusual Whales API keys not verified (rate-limited): HTTP 429"),
        ("alpaca", Kind.KEY_REJECTED, "warning", "Alpaca API keys malformed: not sent")]
    assert events.recent()[0]["next_step"].startswith("scripts/update_api_keys.sh")


def test_a_detail_holding_a_key_the_hub_knows_is_redacted(tmp_path: Path) -> None:
    events = EventLog()
    reports = KeyReports(settings_of(tmp_path, POLYGON_API_KEY=SECRET), events)
    reports.report({"results": [{"provider": "polygon", "status": "rejected",
                                 "detail": f"the provider echoed {SECRET}"}]})
    assert SECRET not in json.dumps(events.recent())


@pytest.mark.parametrize(("body", "said"), [
    ({}, "results is required"),
    ({"results": []}, "results is required"),
    ({"results": ["x"]}, "each result must be an object"),
    ({"results": [{"provider": "nasdaq", "status": "valid", "detail": ""}]},
     "provider 'nasdaq' is unknown"),
    ({"results": [{"provider": "alpaca", "status": "fine", "detail": ""}]},
     "status 'fine' is unknown"),
    ({"results": [{"provider": "alpaca", "status": "valid", "detail": "x" * 501}]},
     "at most 500 characters"),
])
def test_a_malformed_report_is_refused_and_records_nothing(
        tmp_path: Path, body: dict[str, object], said: str) -> None:
    events = EventLog()
    with pytest.raises(BadReport, match=said):
        KeyReports(settings_of(tmp_path), events).report(body)
    assert events.recent() == []


def test_the_status_is_the_record_or_what_the_hub_was_started_with(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, ALPACA_API_KEY_ID="PKX", ALPACA_API_SECRET_KEY="s")
    reports = KeyReports(settings, EventLog())
    alpaca = reports.status()["providers"]["alpaca"]
    assert alpaca == {"title": "Alpaca", "base_url": "https://paper-api.alpaca.markets",
                      "keys": {"ALPACA_API_KEY_ID": True, "ALPACA_API_SECRET_KEY": True},
                      "status": None, "detail": None, "verified": None}
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "keys.json").write_text(json.dumps({"providers": {"alpaca": {
        "title": "Alpaca", "base_url": "u", "keys": {"ALPACA_API_KEY_ID": False},
        "status": "missing", "detail": "d", "verified": 5.0, "extra": "dropped"}}}))
    assert reports.status()["providers"]["alpaca"] == {
        "title": "Alpaca", "base_url": "u", "keys": {"ALPACA_API_KEY_ID": False},
        "status": "missing", "detail": "d", "verified": 5.0}
    (settings.run_dir / "keys.json").write_text("{broken")
    assert reports.status()["providers"]["alpaca"]["keys"]["ALPACA_API_KEY_ID"] is True
