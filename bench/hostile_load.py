"""Hostile load: one account's 60 parallel cart adds plus 40 slow-body clients, while innocent
shoppers browse and add to their carts. Nobody innocent may get a 5xx, and GET / must keep a p99
under 1 s.

    .venv/bin/python bench/hostile_load.py [--duration 20] [--database sqlite|postgresql]

Serves the shop like bench/pages.py (fresh database with the demo catalogue, hypercorn with 2
uvloop workers on 127.0.0.1). The attacker registers and logs in, then wrk keeps 60 connections
posting htmx adds with its cookies; 40 asyncio clients send a signed-in POST's headers and then
its body one byte a second (never finishing; reconnecting when answered). Meanwhile wrk loads
GET / as a returning shopper, POST /cart/items for 20 guest carts, and POST /cart/items for
another signed-in shopper (4 connections each). Statuses are counted by wrk's Lua `response`
hook. Rate limits are off: every client here shares one address, as a botnet's would not.
PostgreSQL: a fresh database on --postgresql-admin (default postgres@127.0.0.1:5432), dropped
afterwards.
"""

import argparse
import asyncio
import os
import re
import secrets
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pages import (  # noqa: E402
    cart_shoppers,
    free_port,
    hypercorn,
    new_shopper,
    parse_wrk,
    prepare_database,
)

COOKIE_NAME = "storefront_session"
ATTACK_CONNECTIONS = 60
SLOW_CLIENTS = 40
INNOCENT_CONNECTIONS = 4
GUEST_CARTS = 20
PASSWORD = "hostile load password"
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s2, s3, s4, s5 = 0, 0, 0, 0 end
function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1 elseif status >= 400 then s4 = s4 + 1
  elseif status >= 300 then s3 = s3 + 1 else s2 = s2 + 1 end
end
function done(summary, latency, requests)
  local t2, t3, t4, t5 = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    t2 = t2 + thread:get("s2"); t3 = t3 + thread:get("s3")
    t4 = t4 + thread:get("s4"); t5 = t5 + thread:get("s5")
  end
  io.write(string.format("STATUSES 2xx=%d 3xx=%d 4xx=%d 5xx=%d\\n", t2, t3, t4, t5))
end
"""


@dataclass(frozen=True)
class Attacker:
    cookie: str
    csrf_token: str


@dataclass(frozen=True)
class GroupResult:
    name: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    statuses: str
    answered: int
    failures: int  # 5xx answers, timeouts and socket errors


def register_shopper(base_url: str, name: str) -> Attacker:
    """Sign up and stay logged in, as a browser would: the cookies and the CSRF token."""
    with httpx.Client(base_url=base_url) as browser:
        page = browser.get("/register")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None, "no CSRF token on /register"
        answer = browser.post(
            "/register",
            data={
                "csrf_token": token[1],
                "name": name,
                "email": f"shopper-{uuid.uuid4().hex[:8]}@example.com",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
        )
        assert answer.status_code in (302, 303), f"register: {answer.status_code}"
        account = browser.get("/account")
        assert account.status_code == 200, f"/account after register: {account.status_code}"
        token = re.search(r'name="csrf-token" content="([^"]+)"', account.text)
        assert token is not None
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        return Attacker(cookie, token[1])


def lua_script(path: Path, method: str, url_path: str, requests: list[tuple[str, str]]) -> Path:
    """wrk script: `method url_path` rotating over (cookie, form body) pairs, counting statuses."""
    pairs = ",\n".join(f'  {{"{cookie}", "{body}"}}' for cookie, body in requests)
    headers = '["HX-Request"] = "true", ["Accept-Encoding"] = "gzip", ["Cookie"] = pair[1]'
    if method == "POST":
        headers += ', ["Content-Type"] = "application/x-www-form-urlencoded"'
    path.write_text(
        f"local pairs = {{\n{pairs}\n}}\nlocal turn = 0\n"
        "request = function()\n"
        "  turn = turn % #pairs + 1\n"
        "  local pair = pairs[turn]\n"
        "  local body = nil\n"
        '  if pair[2] ~= "" then body = pair[2] end\n'
        f'  return wrk.format("{method}", "{url_path}", {{{headers}}}, body)\n'
        "end\n" + STATUS_LUA
    )
    return path


async def run_wrk(
    name: str, url: str, script: Path, connections: int, duration: int
) -> GroupResult:
    threads = 2 if connections >= 10 else 1
    process = await asyncio.create_subprocess_exec(
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"),
        *("--latency", "-s", str(script), url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    text = output.decode()
    result = parse_wrk(text)
    statuses = re.search(r"STATUSES (.*)", text)
    assert statuses is not None, text
    five_xx = int(re.search(r"5xx=(\d+)", statuses[1])[1])  # type: ignore[index]
    if result.socket_errors:
        statuses_text = f"{statuses[1]} socket-errors={result.socket_errors}"
    else:
        statuses_text = statuses[1]
    return GroupResult(
        name,
        connections,
        result.requests_per_second,
        result.p50_ms,
        result.p99_ms,
        statuses_text,
        result.requests,
        five_xx + result.socket_errors,
    )


async def slow_client(
    base_url: str, attacker: Attacker, stop: asyncio.Event, seen: Counter
) -> None:
    """A signed-in POST whose body arrives one byte a second and never completes."""
    host, port = base_url.removeprefix("http://").split(":")
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            seen["connect failed"] += 1
            await asyncio.sleep(1)
            continue
        writer.write(
            (
                f"POST /account/wallet/topup HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Cookie: {attacker.cookie}\r\nX-CSRF-Token: {attacker.csrf_token}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n"
                "\r\namount=5"
            ).encode()
        )
        try:
            answer = asyncio.ensure_future(reader.read(64))
            while not answer.done() and not stop.is_set():
                writer.write(b"0")
                await writer.drain()
                await asyncio.wait([answer], timeout=1)
            if answer.done():
                status = answer.result()[9:12].decode() or "closed"
                seen[status] += 1
            else:
                answer.cancel()
        except OSError:
            seen["reset"] += 1
        finally:
            writer.close()


async def hostile_round(
    base_url: str,
    attacker: Attacker,
    innocent: Attacker,
    guests: list[tuple[str, str]],
    product_id: int,
    duration: int,
    workdir: Path,
    returning_cookie: str,
) -> tuple[list[GroupResult], Counter]:
    attack = lua_script(
        workdir / "attack.lua",
        "POST",
        "/cart/items",
        [(attacker.cookie, f"product_id={product_id}&quantity=1&csrf_token={attacker.csrf_token}")],
    )
    browse = lua_script(workdir / "browse.lua", "GET", "/", [(returning_cookie, "")])
    shop = lua_script(workdir / "shop.lua", "POST", "/cart/items", guests)
    signed_in = lua_script(
        workdir / "signed_in.lua",
        "POST",
        "/cart/items",
        [(innocent.cookie, f"product_id={product_id}&quantity=1&csrf_token={innocent.csrf_token}")],
    )
    stop = asyncio.Event()
    seen: Counter = Counter()
    slow = [
        asyncio.create_task(slow_client(base_url, attacker, stop, seen))
        for _ in range(SLOW_CLIENTS)
    ]
    await asyncio.sleep(2)  # the slow clients are in before the rest starts
    results = await asyncio.gather(
        run_wrk("attacker: signed-in adds", base_url + "/", attack, ATTACK_CONNECTIONS, duration),
        run_wrk(
            "innocent: GET / (returning)", base_url + "/", browse, INNOCENT_CONNECTIONS, duration
        ),
        run_wrk("innocent: guest adds", base_url + "/", shop, INNOCENT_CONNECTIONS, duration),
        run_wrk(
            "innocent: signed-in adds", base_url + "/", signed_in, INNOCENT_CONNECTIONS, duration
        ),
    )
    stop.set()
    await asyncio.gather(*slow)
    return list(results), seen


async def create_postgresql_database(admin_url: str) -> tuple[str, str]:
    import asyncpg

    name = f"storefront_hostile_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{base}/{name}"


async def drop_postgresql_database(admin_url: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of hostile load")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgresql-admin", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="storefront-hostile-"))
    pg_name = None
    if options.database == "postgresql":
        pg_name, database_url = asyncio.run(create_postgresql_database(options.postgresql_admin))
    else:
        database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    try:
        _, product_id = asyncio.run(prepare_database(database_url))
        shop_env = {
            "DATABASE_URL": database_url,
            "SECRET_KEY": secrets.token_hex(32),
            "STOREFRONT_ENV": "production",
            "PUBLIC_BASE_URL": "http://127.0.0.1",
            "PAYSTACK_PUBLIC_KEY": "",
            "PAYSTACK_SECRET_KEY": "",
            "QUART_AUTH_COOKIE_SECURE": "False",
            "OUTBOX_SENDER_ENABLED": "false",
            # Every client here shares 127.0.0.1; in the field 100 hostile clients would come
            # from many addresses, so per-address limits would not stop them.
            "RATELIMIT_ENABLED": "false",
        }
        load_before = os.getloadavg()[0]
        with hypercorn("bench.shop_app:app", free_port(), shop_env, workdir / "shop.log") as server:
            attacker = register_shopper(server.url, "Hostile Hal")
            innocent = register_shopper(server.url, "Innocent Ines")
            guests = cart_shoppers(server.url, COOKIE_NAME, product_id, GUEST_CARTS)
            assert not isinstance(guests, str), guests
            guest_requests = [
                (g.cookie, f"product_id={product_id}&quantity=1&csrf_token={g.csrf_token}")
                for g in guests
            ]
            returning = new_shopper(server.url, COOKIE_NAME).cookie
            results, slow_seen = asyncio.run(
                hostile_round(
                    server.url,
                    attacker,
                    innocent,
                    guest_requests,
                    product_id,
                    options.duration,
                    workdir,
                    returning,
                )
            )
    finally:
        if pg_name is not None:
            asyncio.run(drop_postgresql_database(options.postgresql_admin, pg_name))
    print(
        f"{options.database}; hypercorn --workers 2 --worker-class uvloop; {options.duration} s; "
        f"{SLOW_CLIENTS} slow-body clients; {os.cpu_count()} CPUs; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    header = f"{'group':<30}{'conns':>6}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}  statuses"
    print(header)
    print("-" * (len(header) + 30))
    for group in results:
        print(
            f"{group.name:<30}{group.connections:>6}{group.requests_per_second:>8.0f}"
            f"{group.p50_ms:>9.1f}{group.p99_ms:>9.1f}  {group.statuses}"
        )
    answers = ", ".join(f"{status}: {count}" for status, count in sorted(slow_seen.items()))
    print(f"{'slow bodies (answers)':<30}{SLOW_CLIENTS:>6}  {answers or 'none'}")
    innocent = [group for group in results if group.name.startswith("innocent")]
    home = next(group for group in innocent if "GET /" in group.name)
    failures = sum(group.failures for group in innocent)
    unanswered = [group.name for group in innocent if group.answered == 0]
    verdict = failures == 0 and not unanswered and home.p99_ms < 1000
    print(
        f"innocent 5xx, timeouts and socket errors: {failures}; never answered: "
        f"{', '.join(unanswered) or 'none'}; GET / p99 {home.p99_ms:.0f} ms (target < 1000): "
        f"{'PASS' if verdict else 'FAIL'}\nfiles in {workdir}"
    )
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
