"""The API key and shop_id go only to the origin of base_url; https never falls back to http.

Real HTTP over loopback: a second aiohttp.web server on another port is another
origin (a storage host), and records every request it receives.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from syncer.commands import run_source
from syncer.config import Config, HttpConfig, Secret, SourceConfig
from syncer.errors import MiraklError
from syncer.mirakl.client import MiraklClient, open_client, url_origin
from syncer.simulator import SimulatorState
from syncer.store.sync_store import SyncStore
from tests.truth import assert_matches_truth

KEY = "sim-secret-key"
HTTP = HttpConfig(timeout_seconds=5, max_attempts=2, backoff_base_seconds=0.01)


@dataclass
class Seen:
    """What one server received: (path, headers, query) per request."""

    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)

    def record(self, request: web.Request) -> None:
        self.requests.append((request.path, dict(request.headers), dict(request.query)))

    def assert_no_credentials(self) -> None:
        for path, headers, query in self.requests:
            assert "Authorization" not in headers, path
            assert not any(KEY in value for value in headers.values()), path
            assert "shop_id" not in query, path


@asynccontextmanager
async def serve_app(app: web.Application, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Route = Callable[[], web.Response]


def recording_app(seen: Seen, routes: dict[str, Route]) -> web.Application:
    """An app answering each path with a fixed response, recording every request."""

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.record(request)
        route = routes.get(request.path)
        return route() if route else web.json_response({"message": "no"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def source(base_url: str) -> SourceConfig:
    return SourceConfig(name="shop", base_url=base_url, api_key=Secret(KEY), shop_id=2001)


def redirect(location: str, status: int = 302) -> Route:
    return lambda: web.Response(status=status, headers={"Location": location})


def empty_chunk() -> web.Response:
    return web.Response(body=b'{"orders":[]}', content_type="application/json")


async def read_chunk(client: MiraklClient, url: str) -> bytes:
    async with client.open_chunk(url) as stream:
        return b"".join([block async for block in stream])


def test_origin_is_scheme_host_and_port_normalised() -> None:
    """Origins compare scheme, host (any case) and port (default ports filled in)."""
    assert url_origin("HTTPS://Mirakl.Example.COM:443/a?x=1") == url_origin(
        "https://mirakl.example.com/b"
    )
    assert url_origin("http://h:80/") == url_origin("http://H/")
    assert url_origin("http://h/") != url_origin("https://h/")
    assert url_origin("https://h/") != url_origin("https://h:8443/")
    assert url_origin("https://h.evil/") != url_origin("https://h/")
    assert url_origin("ftp://h/") is None


async def test_chunks_on_another_origin_are_fetched_without_the_key(
    make_config: Callable[..., Config],
    store: SyncStore,
    pool: asyncpg.Pool,
    sim_state: SimulatorState,
) -> None:
    """OR14 lists chunk URLs on another port (a storage host): a full run loads them, and that
    host never receives the API key or shop_id."""
    seen = Seen()

    async def chunk(request: web.Request) -> web.StreamResponse:
        seen.record(request)
        export = sim_state.exports[request.match_info["tracking_id"]]
        index = int(request.match_info["index"])
        if request.query.get("token") != export.tokens[index]:  # the URL is the credential
            return web.json_response({"message": "bad signature"}, status=403)
        return web.Response(body=b'{"orders":[' + b",".join(export.chunks[index]) + b"]}")

    storage = web.Application()
    storage.router.add_get("/exports/{tracking_id}/chunk-{index:\\d+}.json", chunk)
    sim_state.config.max_items_per_chunk = 15
    sim_state.seed_orders(40, days=30)
    async with serve_app(storage) as storage_url:
        sim_state.config.chunk_base_url = storage_url
        config = make_config(shop_id=2001)
        summary = await run_source(config, store, config.sources[0], "full")
    assert summary.status == "succeeded" and summary.orders == 40
    assert len(seen.requests) == 3, "three chunks, fetched from the storage host"
    seen.assert_no_credentials()
    assert sim_state.calls["OR15"] == 0
    await assert_matches_truth(pool, sim_state)


async def test_redirects_to_another_origin_drop_the_key() -> None:
    """A redirect (OR14 or a chunk) to another origin reaches it without key or shop_id; the
    source's own origin still gets both."""
    seen_home, seen_away = Seen(), Seen()
    status = {"status": "COMPLETED", "last_updated": "2026-01-01T00:00:00Z", "urls": []}
    away_routes: dict[str, Route] = {
        "/status": lambda: web.json_response(status),
        "/file": empty_chunk,
    }
    async with serve_app(recording_app(seen_away, away_routes)) as away:
        home_routes = {
            "/api/orders/async-export/status/t1": redirect(f"{away}/status", 307),
            "/chunk": redirect(f"{away}/file?signature=s"),
        }
        async with (
            serve_app(recording_app(seen_home, home_routes)) as home,
            open_client(source(home), HTTP) as client,
        ):
            assert (await client.export_status("t1")).status == "COMPLETED"
            assert await read_chunk(client, f"{home}/chunk?token=t") == b'{"orders":[]}'
    assert [path for path, _, _ in seen_away.requests] == ["/status", "/file"]
    seen_away.assert_no_credentials()
    assert all(h.get("Authorization") == KEY for _, h, _ in seen_home.requests)
    assert all(q.get("shop_id") == "2001" for _, _, q in seen_home.requests)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def tls_client(base_url: str, cert: Path) -> AsyncIterator[MiraklClient]:
    """A client for an https source that trusts the test certificate."""
    trust = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
        yield MiraklClient(session, source(base_url), HTTP)


async def test_an_https_source_never_downgrades_to_http(tls_files: tuple[Path, Path]) -> None:
    """base_url is https: an http chunk URL, or an https chunk redirected to http, is refused
    with the URL named without its query, and the http server receives nothing."""
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    seen_plain, seen_home = Seen(), Seen()
    async with serve_app(recording_app(seen_plain, {"/file": empty_chunk})) as plain:
        home_routes = {"/chunk": redirect(f"{plain}/file?signature=s"), "/ok": empty_chunk}
        async with (
            serve_app(recording_app(seen_home, home_routes), server_tls) as home,
            tls_client(home, cert) as client,
        ):
            assert await read_chunk(client, f"{home}/ok") == b'{"orders":[]}'  # TLS works
            with pytest.raises(MiraklError, match=f"refused {plain}/file: plain http") as direct:
                await read_chunk(client, f"{plain}/file?signature=s")
            with pytest.raises(MiraklError, match=f"refused {plain}/file: plain http") as hop:
                await read_chunk(client, f"{home}/chunk?token=t")
    assert seen_plain.requests == []
    for caught in (direct, hop):
        assert "signature" not in str(caught.value) and "token" not in str(caught.value)
        assert KEY not in str(caught.value)
