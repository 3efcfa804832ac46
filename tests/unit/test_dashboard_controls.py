"""dashboard: operator sign-in, CSRF, control actions (confirmation, rate limit, the
actor passed to the hub), the shared ledger, and the gunicorn program's settings."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.dashboard_fakes import (
    TOKEN,
    FakeHub,
    FakePrometheus,
    backups,
    csrf_of,
    make_app,
    sign_in,
)
from unistack.config import ConfigError
from unistack.dashboard import __main__ as program
from unistack.dashboard import auth, server
from unistack.dashboard.ledger import NONCE_TTL, Ledger
from unistack.dashboard.security import MAX_CONTENT_LENGTH

# Every control: its path, its form (besides the CSRF token), and what the hub is asked.
CONTROLS = {
    "restart": ("/controls/restart/redis", {}, ("/services/redis/restart", None)),
    "silence": ("/controls/silence/redis", {"duration": "30m", "reason": "maintenance"},
                ("/alerts/silences", {"service": "redis", "seconds": 1800.0,
                                      "reason": "maintenance"})),
    "test_alert": ("/controls/test-alert", {}, ("/alerts/test", None)),
    "backup": ("/controls/backup", {}, ("/backups", None)),
}


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def app(tmp_path: Path, hub: FakeHub) -> Flask:
    return make_app(tmp_path, hub, FakePrometheus())


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def nonce_of(page: str) -> str:
    match = re.search(r'name="confirm" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def confirm(client: FlaskClient, csrf: str, name: str) -> tuple[str, int]:
    """The two POSTs of control NAME; (the second's page, its status)."""
    path, form, _ = CONTROLS[name]
    first = client.post(path, data={"csrf_token": csrf, **form})
    assert first.status_code == 200, first.get_data(as_text=True)
    second = client.post(path, data={"csrf_token": csrf,
                                     "confirm": nonce_of(first.get_data(as_text=True))})
    return second.get_data(as_text=True), second.status_code


# --- sign-in ---------------------------------------------------------------------------


def test_a_wrong_token_is_refused(client: FlaskClient) -> None:
    answer = client.post("/login", data={"csrf_token": csrf_of(client), "token": "guess"})
    assert answer.status_code == 403 and "wrong operator token" in answer.get_data(as_text=True)
    assert 'content="1"' not in client.get("/").get_data(as_text=True)


def test_the_right_token_makes_an_operator(client: FlaskClient) -> None:
    sign_in(client)
    page = client.get("/").get_data(as_text=True)
    assert '<meta name="operator" content="1">' in page and "Sign out" in page
    cookie = client.get_cookie("unistack_dashboard")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Strict"


def test_sign_in_needs_the_csrf_token(client: FlaskClient) -> None:
    csrf_of(client)
    answer = client.post("/login", data={"token": TOKEN})
    assert answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True)


def test_sign_out_ends_the_operator_session(client: FlaskClient) -> None:
    csrf = sign_in(client)
    client.post("/logout", data={"csrf_token": csrf})
    assert '<meta name="operator" content="0">' in client.get("/").get_data(as_text=True)


def test_the_session_key_comes_from_the_token(tmp_path: Path, hub: FakeHub) -> None:
    assert auth.secret_key(TOKEN) == auth.secret_key(TOKEN) != auth.secret_key(TOKEN + "x")
    assert auth.secret_key("") != auth.secret_key("")  # no token: random, never guessable
    old = make_app(tmp_path, hub, FakePrometheus()).test_client()
    sign_in(old)
    rotated = make_app(tmp_path, hub, FakePrometheus(), UNISTACK_OPERATOR_TOKEN="n" * 40)
    client = rotated.test_client()
    client.set_cookie("unistack_dashboard", old.get_cookie("unistack_dashboard").value)
    assert '<meta name="operator" content="0">' in client.get("/").get_data(as_text=True)


def test_without_a_token_nobody_signs_in(tmp_path: Path, hub: FakeHub) -> None:
    client = make_app(tmp_path, hub, FakePrometheus(),
                      UNISTACK_OPERATOR_TOKEN="").test_client()
    answer = client.post("/login", data={"csrf_token": csrf_of(client), "token": ""})
    assert answer.status_code == 403


# --- refusals: nothing reaches the hub ------------------------------------------------------


@pytest.mark.parametrize("name", list(CONTROLS))
def test_a_control_without_operator_session_is_403(client: FlaskClient, hub: FakeHub,
                                                   name: str) -> None:
    path, form, _ = CONTROLS[name]
    answer = client.post(path, data={"csrf_token": csrf_of(client), **form})
    assert answer.status_code == 403 and "sign in" in answer.get_data(as_text=True)
    assert hub.posts == []


@pytest.mark.parametrize("name", list(CONTROLS))
@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_control_without_the_right_csrf_token_is_400(
    client: FlaskClient, hub: FakeHub, name: str, token: str | None
) -> None:
    sign_in(client)
    path, form, _ = CONTROLS[name]
    data = dict(form) if token is None else {"csrf_token": token, **form}
    answer = client.post(path, data=data)
    assert answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True)
    assert hub.posts == []


def test_an_unknown_service_is_404_escaped(client: FlaskClient, hub: FakeHub) -> None:
    csrf = sign_in(client)
    answer = client.post("/controls/restart/%3Cb%3Ex", data={"csrf_token": csrf})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 404 and "<b>x" not in text and "&#39;&lt;b&gt;x&#39;" in text
    assert hub.posts == []


@pytest.mark.parametrize(("form", "said"), [
    ({"duration": "forever", "reason": "x"}, "duration"),
    ({"duration": "8d", "reason": "x"}, "too long"),
    ({"duration": "1h", "reason": "  "}, "reason is required"),
])
def test_a_bad_silence_is_400(client: FlaskClient, hub: FakeHub, form: dict[str, str],
                              said: str) -> None:
    csrf = sign_in(client)
    answer = client.post("/controls/silence/redis", data={"csrf_token": csrf, **form})
    assert answer.status_code == 400 and said in answer.get_data(as_text=True)
    assert hub.posts == []


# --- confirmation, action, audit ------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONTROLS))
def test_a_control_is_confirmed_then_done_by_the_hub(client: FlaskClient, hub: FakeHub,
                                                     name: str) -> None:
    csrf = sign_in(client)
    path, form, asked = CONTROLS[name]
    first = client.post(path, data={"csrf_token": csrf, **form})
    page = first.get_data(as_text=True)
    assert first.status_code == 200 and "Confirm:" in page and "audit event" in page
    assert first.headers["Cache-Control"] == "no-store"
    assert hub.posts == []  # nothing done before the confirmation
    second = client.post(path, data={"csrf_token": csrf, "confirm": nonce_of(page)})
    assert second.status_code == 200 and "accepted" in second.get_data(as_text=True)
    assert hub.posts == [(*asked, "dashboard from 127.0.0.1")]


def test_the_confirmation_says_exactly_what_happens(client: FlaskClient) -> None:
    csrf = sign_in(client)
    restart = client.post("/controls/restart/redis", data={"csrf_token": csrf})
    assert "Restart redis" in restart.get_data(as_text=True)
    assert "stops redis through supervisord" in restart.get_data(as_text=True)
    silence = client.post("/controls/silence/ml_engine", data={
        "csrf_token": csrf, "duration": "2h", "reason": "<script>alert(1)</script>"})
    text = silence.get_data(as_text=True)
    assert "Silence ml_engine for 2h" in text and "No Slack messages about ml_engine" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert" not in text


def test_the_backup_confirmation_says_what_the_hub_does(client: FlaskClient,
                                                       hub: FakeHub) -> None:
    csrf = sign_in(client)
    page = client_post(client, "/controls/backup", csrf)
    assert "Confirm: Back up now" in page
    for said in ("a Redis snapshot (BGSAVE)", "the models, the market data and config.env",
                 "trial restore into a scratch Redis", "then retention",
                 "Services keep running", "about as long as the last one (14 s)",
                 "the hub refuses"):
        assert said in page, said
    assert 'action="/controls/backup"' in page and hub.posts == []


def test_the_backup_confirmation_without_a_last_run_or_a_hub(tmp_path: Path) -> None:
    hub = FakeHub()
    hub.status["backups"] = backups(last=None)
    client = make_app(tmp_path, hub, FakePrometheus()).test_client()
    csrf = sign_in(client)
    assert "It takes seconds to minutes" in client_post(client, "/controls/backup", csrf)
    hub.down = "connection refused"  # the confirmation needs no hub; the action says so
    fresh = make_app(tmp_path / "other", hub, FakePrometheus()).test_client()
    assert "It takes seconds to minutes" in client_post(fresh, "/controls/backup",
                                                        sign_in(fresh))


def test_a_backup_the_hub_started_is_accepted(client: FlaskClient, hub: FakeHub) -> None:
    page, status = confirm(client, sign_in(client), "backup")
    assert status == 200 and "Back up now: accepted" in page
    assert "The hub answered HTTP 202: started: True, service: backup" in page
    assert hub.posts == [("/backups", None, "dashboard from 127.0.0.1")]


def test_a_backup_already_running_is_409_with_the_hubs_words(client: FlaskClient,
                                                             hub: FakeHub) -> None:
    hub.answers["/backups"] = (409, {"error": "a backup is already running "
                                              "(since 12:00:01 UTC)"})
    page, status = confirm(client, sign_in(client), "backup")
    assert status == 409 and "Back up now: refused" in page
    assert "The hub answered HTTP 409: a backup is already running (since 12:00:01 UTC)" in page


def test_a_confirmation_works_once(client: FlaskClient, hub: FakeHub) -> None:
    csrf = sign_in(client)
    first = client.post("/controls/restart/redis", data={"csrf_token": csrf})
    nonce = nonce_of(first.get_data(as_text=True))
    client.post("/controls/restart/redis", data={"csrf_token": csrf, "confirm": nonce})
    again = client.post("/controls/restart/redis", data={"csrf_token": csrf, "confirm": nonce})
    assert again.status_code == 400 and len(hub.posts) == 1


def test_a_confirmation_is_for_its_own_action_and_session(app: Flask, hub: FakeHub) -> None:
    one, other = app.test_client(), app.test_client()
    csrf = sign_in(one)
    nonce = nonce_of(client_post(one, "/controls/restart/redis", csrf))
    assert one.post("/controls/restart/prometheus",
                    data={"csrf_token": csrf, "confirm": nonce}).status_code == 400
    nonce = nonce_of(client_post(one, "/controls/restart/redis", csrf))
    other_csrf = sign_in(other)
    assert other.post("/controls/restart/redis",
                      data={"csrf_token": other_csrf, "confirm": nonce}).status_code == 400
    assert hub.posts == []


def client_post(client: FlaskClient, path: str, csrf: str) -> str:
    return client.post(path, data={"csrf_token": csrf}).get_data(as_text=True)


def test_the_hubs_refusal_is_shown(client: FlaskClient, hub: FakeHub) -> None:
    hub.answer = (404, {"error": "'hub' is not a service the hub restarts"})
    page, status = confirm(client, sign_in(client), "restart")
    assert status == 404 and "refused" in page and "not a service the hub restarts" in page


def test_an_unreachable_hub_at_the_action_is_502(client: FlaskClient, hub: FakeHub) -> None:
    csrf = sign_in(client)
    first = client.post("/controls/test-alert", data={"csrf_token": csrf})
    hub.down = "connection refused"
    second = client.post("/controls/test-alert",
                         data={"csrf_token": csrf, "confirm": nonce_of(first.get_data(True))})
    assert second.status_code == 502 and "unreachable" in second.get_data(as_text=True)


# --- rate limit -----------------------------------------------------------------------------


def test_one_action_per_service_per_interval(client: FlaskClient, hub: FakeHub) -> None:
    csrf = sign_in(client)
    confirm(client, csrf, "restart")
    refused = client.post("/controls/restart/redis", data={"csrf_token": csrf})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert "Retry in" in refused.get_data(as_text=True)
    silence = client.post("/controls/silence/redis",  # the limit is per service
                          data={"csrf_token": csrf, "duration": "1h", "reason": "x"})
    assert silence.status_code == 429
    assert confirm(client, csrf, "test_alert")[1] == 200  # another target is free
    assert confirm(client, csrf, "backup")[1] == 200
    assert client.post("/controls/backup", data={"csrf_token": csrf}).status_code == 429
    assert len(hub.posts) == 3


def test_two_pending_confirmations_do_one_action(client: FlaskClient, hub: FakeHub) -> None:
    csrf = sign_in(client)
    pages = [client_post(client, "/controls/restart/redis", csrf) for _ in range(2)]
    codes = [client.post("/controls/restart/redis",
                         data={"csrf_token": csrf, "confirm": nonce_of(p)}).status_code
             for p in pages]
    assert codes == [200, 429] and len(hub.posts) == 1


def test_the_ledger_is_shared_and_bounded_in_time(tmp_path: Path) -> None:
    now = [1000.0]
    one = Ledger(tmp_path / "ledger.sqlite", clock=lambda: now[0])
    other = Ledger(tmp_path / "ledger.sqlite", clock=lambda: now[0])  # another worker
    assert one.claim("redis", 10) == 0.0
    assert other.claim("redis", 10) == 10.0 and other.wait("redis", 10) == 10.0
    now[0] += 10
    assert other.claim("redis", 10) == 0.0
    nonce = one.issue("session", {"kind": "restart", "service": "redis"})
    now[0] += NONCE_TTL + 1
    assert other.redeem(nonce, "session") is None  # expired
    assert (tmp_path / "ledger.sqlite").stat().st_mode & 0o077 == 0


# --- limits and the program ---------------------------------------------------------------


def test_a_body_over_16_kib_is_413(client: FlaskClient, hub: FakeHub) -> None:
    csrf = sign_in(client)
    answer = client.post("/controls/silence/redis", data={
        "csrf_token": csrf, "duration": "1h", "reason": "x" * (MAX_CONTENT_LENGTH + 1)})
    assert answer.status_code == 413 and hub.posts == []


def test_gunicorn_serves_on_loopback_with_gthread(tmp_path: Path) -> None:
    from tests.dashboard_fakes import settings_for

    settings = settings_for(tmp_path, DASHBOARD_PORT="5999", DASHBOARD_WORKERS="3",
                            DASHBOARD_THREADS="8")
    options = server.options(settings)
    assert options["bind"] == ["127.0.0.1:5999"] and options["worker_class"] == "gthread"
    assert (options["workers"], options["threads"]) == (3, 8)
    assert options["graceful_timeout"] == 1 and options["accesslog"] is None
    assert options["control_socket_disable"] is True
    assert options["keepalive"] <= options["graceful_timeout"]  # a stop stays inside it


def test_sigterm_in_a_worker_sets_stopping_then_runs_gunicorns_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dashboard_fakes import settings_for

    stopping, seen = threading.Event(), []
    monkeypatch.setattr(server.faulthandler, "register", lambda *a, **k: None)
    installed: dict[int, object] = {}
    monkeypatch.setattr(server.signal, "getsignal", lambda signum: lambda *a: seen.append(a))
    monkeypatch.setattr(server.signal, "signal", lambda signum, h: installed.update({signum: h}))
    server.options(settings_for(tmp_path), stopping)["post_worker_init"](object())
    installed[signal.SIGTERM](signal.SIGTERM, None)  # type: ignore[operator]
    assert stopping.is_set() and seen == [(signal.SIGTERM, None)]


def test_a_configuration_error_exits_2(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def refuse() -> None:
        raise ConfigError("DASHBOARD_PORT='x' is invalid: expected a TCP port 1-65535.")

    monkeypatch.setattr(program, "load_settings", refuse)
    assert program.main() == 2
    assert capsys.readouterr().err == ("unistack dashboard: configuration error: "
                                       "DASHBOARD_PORT='x' is invalid: expected a TCP port "
                                       "1-65535.\n")
