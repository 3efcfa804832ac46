"""A local HTTP server standing in for the trading API providers (Polygon.io, Unusual
Whales, Alpaca), each under its own path prefix, recording every request and answering
as told:

    with ProviderStandIn() as providers:
        providers.answer("alpaca", "valid")    # valid, 401, 403, 429, slow, malformed, foreign
        providers.base_url("alpaca")           # what to put in ALPACA_BASE_URL
        providers.requests                     # every request: provider, path, headers
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What each provider's cheap authenticated GET answers when the keys are good.
VALID = {
    "polygon": {"market": "open", "serverTime": "2026-12-06T10:00:00-05:00",
                "exchanges": {"nasdaq": "open", "nyse": "open", "otc": "open"}},
    "unusual_whales": {"data": {"symbol": "SPY", "full_name": "SPDR S&P 500 ETF"}},
    "alpaca": {"id": "00000000-0000-0000-0000-000000000000", "status": "ACTIVE",
               "currency": "USD", "cash": "100000"},
}
SLOW_S = 3.0


@dataclass
class Seen:
    provider: str
    path: str
    headers: dict[str, str]  # by lower-case name


@dataclass
class _State:
    modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(VALID, "valid"))
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ProviderStandIn:
    def __init__(self) -> None:
        self._state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self._state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ProviderStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def base_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{provider}"

    def answer(self, provider: str, mode: str) -> None:
        with self._state.lock:
            self._state.modes[provider] = mode

    @property
    def requests(self) -> list[Seen]:
        with self._state.lock:
            return list(self._state.requests)


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            provider = self.path.split("/")[1]
            with state.lock:
                state.requests.append(Seen(provider, self.path, {
                    k.lower(): v for k, v in self.headers.items()}))
                mode = state.modes.get(provider, "valid")
            kind = next((k for k in VALID if provider.endswith(k)), "")  # paper-api.alpaca
            if mode == "slow":
                time.sleep(SLOW_S)
                mode = "valid"
            if mode == "valid":
                self._send(200, json.dumps(VALID.get(kind, {})).encode())
            elif mode == "malformed":
                self._send(200, b"<html>captive portal</html>")
            elif mode == "foreign":
                self._send(200, json.dumps({"hello": "world"}).encode())
            elif mode == "429":
                self._send(429, b'{"message": "too many requests"}', {"Retry-After": "7"})
            elif mode in ("401", "403"):
                # As providers do, the answer echoes nothing of the key back.
                self._send(int(mode), b'{"status": "ERROR", "error": "Unknown API Key"}')
            else:
                self._send(int(mode), b"{}")

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (its timeout)

    return Handler
