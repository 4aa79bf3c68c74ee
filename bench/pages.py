"""Load benchmark: the storefront's pages against a bare Quart hello app, same hypercorn settings.

    .venv/bin/python bench/pages.py [--duration 10] [--connections 50] [--repeat 1]

Makes a fresh SQLite database with the demo catalogue (`storefront seed-demo`'s data), starts the
shop and bench/hello_app.py under hypercorn (2 workers, uvloop) on 127.0.0.1, loads each with wrk
for a bounded time and prints requests/s, p50 and p99 and the ratio to hello. Page requests send
`Accept-Encoding: gzip` and a returning shopper's session cookie, as a browser would; one row
shows a first visit (no cookie). POST /cart/items rotates over 50 shoppers' carts.
"""

import argparse
import asyncio
import dataclasses
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, update  # noqa: E402

from storefront.db.engine import make_engine, make_sessionmaker  # noqa: E402
from storefront.db.transactions import write_transaction  # noqa: E402
from storefront.models import Base, Category, Product, Slider  # noqa: E402

HOST = "127.0.0.1"
CART_SHOPPERS = 50
BIG_STOCK = 1_000_000_000
_LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_BYTE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    bytes_read: int = 0
    server_cpu_seconds: float = 0.0

    @property
    def bytes_per_request(self) -> float:
        """Response bytes (status line, headers and body) per request, as wrk read them."""
        return self.bytes_read / self.requests if self.requests else 0.0

    @property
    def requests_per_cpu_second(self) -> float:
        """Requests per second of server CPU: what the server could do on a machine of its own."""
        return self.requests / self.server_cpu_seconds if self.server_cpu_seconds else 0.0


@dataclass(frozen=True)
class Shopper:
    cookie: str
    csrf_token: str


def _latency_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match[1]) * _LATENCY_UNITS_MS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    """Requests/s, p50/p99 and error counts from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    total = re.search(r"([0-9]+) requests in [^,]+, ([0-9.]+)([KMGT]?B) read", output)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not read wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", output)
    errors = re.search(
        r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", output
    )
    return WrkResult(
        requests_per_second=float(rps[1]),
        p50_ms=_latency_ms(p50[1]),
        p99_ms=_latency_ms(p99[1]),
        requests=int(total[1]),
        bytes_read=round(float(total[2]) * _BYTE_UNITS[total[3]]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(count) for count in errors.groups()) if errors else 0,
    )


def group_cpu_seconds(process_group: int) -> float:
    """User + system CPU seconds used so far by every live process in the group (Linux)."""
    ticks = 0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == process_group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    threads: int,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    server_group: int | None = None,
) -> WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    command += [*_wrk_extras(headers, script), url]
    cpu_before = group_cpu_seconds(server_group) if server_group else 0.0
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    result = parse_wrk(completed.stdout)
    if server_group:
        cpu_used = group_cpu_seconds(server_group) - cpu_before
        result = dataclasses.replace(result, server_cpu_seconds=cpu_used)
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def prepare_database(url: str) -> tuple[str, int]:
    """Schema + demo catalogue; returns a product (slug, id) with stock enough for the POSTs."""
    engine = make_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with make_sessionmaker(engine)() as session, write_transaction(session):
        try:
            from storefront.demo import seed_demo
        except ImportError:
            await _insert_fallback_catalogue(session)
        else:
            await seed_demo(session)
        product = await session.scalar(
            select(Product).where(Product.is_active.is_(True)).order_by(Product.id).limit(1)
        )
        assert product is not None, "the demo catalogue has no active product"
        await session.execute(
            update(Product).where(Product.id == product.id).values(stock=BIG_STOCK)
        )
        slug, product_id = product.slug, product.id
    await engine.dispose()
    return slug, product_id


async def _insert_fallback_catalogue(session: object) -> None:
    category = Category(slug="general", name="General", position=0)
    session.add(category)  # type: ignore[attr-defined]
    await session.flush()  # type: ignore[attr-defined]
    for number in range(1, 25):
        session.add(  # type: ignore[attr-defined]
            Product(
                slug=f"product-{number}",
                name=f"Product {number}",
                description="A demo product for the benchmark.",
                price_minor=1_000 * number,
                stock=3 * number,
                image="",
                category_id=category.id,
            )
        )
    for position in range(3):
        session.add(Slider(title=f"Slide {position + 1}", position=position))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Server:
    url: str
    process_group: int


@contextmanager
def hypercorn(app_path: str, port: int, env: dict[str, str], log_path: Path) -> Iterator[Server]:
    """Serve `app_path` with 2 uvloop workers on 127.0.0.1:port until the block ends."""
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--workers",
        "2",
        "--worker-class",
        "uvloop",
        "--bind",
        f"{HOST}:{port}",
        "--error-logfile",
        str(log_path),
        app_path,
    ]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://{HOST}:{port}"
    try:
        _wait_until_up(base_url, process, log_path)
        yield Server(base_url, process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hypercorn exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(base_url + "/", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base_url} did not come up:\n{log_path.read_text()[-3000:]}")


def _session_cookie(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header.split(";", 1)[0]
    return None


def new_shopper(base_url: str, cookie_name: str) -> Shopper:
    """A first visit: the session cookie and CSRF token a browser would keep."""
    response = httpx.get(base_url + "/", headers={"Accept-Encoding": "gzip"})
    response.raise_for_status()
    cookie = _session_cookie(response, cookie_name)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', response.text)
    if cookie is None or token is None:
        raise RuntimeError("the home page gave no session cookie or CSRF token")
    again = httpx.get(base_url + "/", headers={"Cookie": cookie, "Accept-Encoding": "gzip"})
    if _session_cookie(again, cookie_name) is not None:
        print("warning: a returning shopper's home page re-sent the session cookie")
    return Shopper(cookie=cookie, csrf_token=token[1])


def cart_shoppers(
    base_url: str, cookie_name: str, product_id: int, count: int
) -> list[Shopper] | str:
    """Shoppers who each added once (so their cookie holds a cart), or why that failed."""
    shoppers = []
    for _ in range(count):
        shopper = new_shopper(base_url, cookie_name)
        response = httpx.post(
            base_url + "/cart/items",
            data={"product_id": str(product_id), "quantity": "1", "csrf_token": shopper.csrf_token},
            headers={"Cookie": shopper.cookie, "HX-Request": "true"},
        )
        if response.status_code in (404, 405):
            return f"POST /cart/items answered {response.status_code}: the cart route is missing"
        if response.status_code != 200:
            return f"POST /cart/items answered {response.status_code}: {response.text[:200]}"
        shoppers.append(
            Shopper(_session_cookie(response, cookie_name) or shopper.cookie, shopper.csrf_token)
        )
    return shoppers


def cart_post_script(directory: Path, shoppers: list[Shopper], product_id: int) -> Path:
    """A wrk Lua script that posts an htmx add-to-cart, rotating over the shoppers."""
    cookies = ",\n".join(f'  "{shopper.cookie}"' for shopper in shoppers)
    bodies = ",\n".join(
        f'  "product_id={product_id}&quantity=1&csrf_token={shopper.csrf_token}"'
        for shopper in shoppers
    )
    script = directory / "cart_post.lua"
    script.write_text(
        f"local cookies = {{\n{cookies}\n}}\nlocal bodies = {{\n{bodies}\n}}\n"
        "local turn = 0\n"
        "request = function()\n"
        "  turn = turn % #cookies + 1\n"
        '  return wrk.format("POST", "/cart/items", {\n'
        '    ["Content-Type"] = "application/x-www-form-urlencoded",\n'
        '    ["HX-Request"] = "true",\n'
        '    ["Accept-Encoding"] = "gzip",\n'
        '    ["Cookie"] = cookies[turn],\n'
        "  }, bodies[turn])\n"
        "end\n"
    )
    return script


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    server_group: int
    headers: dict[str, str] | None = None
    script: Path | None = None


@dataclass(frozen=True)
class Row:
    """A target's median run, with its median ratios to the hello run just before each of its
    runs (pairs, so load from other processes on the machine hits both sides alike)."""

    name: str
    result: WrkResult
    hello: WrkResult
    ratio: float
    cpu_ratio: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--env", default="production", help="STOREFRONT_ENV for the shop")
    parser.add_argument("--only", default="", help="run only rows whose name contains this")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="storefront-bench-"))
    database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    slug, product_id = asyncio.run(prepare_database(database_url))
    shop_env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": secrets.token_hex(32),
        "STOREFRONT_ENV": options.env,
        "PUBLIC_BASE_URL": "http://127.0.0.1",
        "PAYSTACK_PUBLIC_KEY": "",
        "PAYSTACK_SECRET_KEY": "",
    }
    cookie_name = "storefront_session"
    load_before = os.getloadavg()[0]

    def load(target: Target) -> WrkResult:
        return run_wrk(
            target.url,
            duration=options.duration,
            connections=options.connections,
            threads=options.threads,
            headers=target.headers,
            script=target.script,
            server_group=target.server_group,
        )

    gzip = {"Accept-Encoding": "gzip"}
    skipped: list[tuple[str, str]] = []
    rows: list[Row] = []
    with (
        hypercorn("bench.hello_app:app", free_port(), {}, workdir / "hello.log") as hello_server,
        hypercorn("bench.shop_app:app", free_port(), shop_env, workdir / "shop.log") as shop,
    ):
        hello = Target(
            "hello (bare Quart)", hello_server.url + "/", hello_server.process_group, gzip
        )
        returning = {**gzip, "Cookie": new_shopper(shop.url, cookie_name).cookie}
        group = shop.process_group
        targets = [
            Target("GET / (returning shopper)", shop.url + "/", group, returning),
            Target("GET / (first visit, no cookie)", shop.url + "/", group, gzip),
            Target(f"GET /products/{slug}", f"{shop.url}/products/{slug}", group, returning),
            Target("GET /api/products", shop.url + "/api/products", group, gzip),
        ]
        shoppers = cart_shoppers(shop.url, cookie_name, product_id, CART_SHOPPERS)
        if isinstance(shoppers, str):
            skipped.append(("POST /cart/items (htmx)", shoppers))
        else:
            script = cart_post_script(workdir, shoppers, product_id)
            targets.append(Target("POST /cart/items (htmx)", shop.url + "/", group, script=script))
        targets = [target for target in targets if options.only in target.name]
        for target in [hello, *targets]:  # warm caches and connections
            subprocess.run(
                [
                    "wrk",
                    "-t1",
                    "-c10",
                    "-d2s",
                    *_wrk_extras(target.headers, target.script),
                    target.url,
                ],
                capture_output=True,
                check=True,
            )
        runs: dict[str, list[tuple[WrkResult, WrkResult]]] = {t.name: [] for t in targets}
        for _ in range(options.repeat):
            for target in targets:
                runs[target.name].append((load(hello), load(target)))
        for target in targets:
            pairs = runs[target.name]
            rows.append(
                Row(
                    name=target.name,
                    result=_median_run([result for _, result in pairs]),
                    hello=_median_run([hello_run for hello_run, _ in pairs]),
                    ratio=statistics.median(
                        result.requests_per_second / hello_run.requests_per_second
                        for hello_run, result in pairs
                    ),
                    cpu_ratio=statistics.median(
                        result.requests_per_cpu_second / hello_run.requests_per_cpu_second
                        for hello_run, result in pairs
                    ),
                )
            )

    print(
        f"hypercorn --workers 2 --worker-class uvloop; wrk -t{options.threads} "
        f"-c{options.connections} -d{options.duration}s --latency; {options.repeat} round(s), "
        f"medians; {os.cpu_count()} CPUs; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    header = (
        f"{'endpoint':<34}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'hello':>7}{'p99':>7}"
        f"{'ratio':>7}{'req/CPU-s':>10}{'hello':>7}{'ratio':>7}{'errors':>7}{'B/req':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        errors = row.result.non_2xx + row.result.socket_errors
        print(
            f"{row.name:<34}{row.result.requests_per_second:>7.0f}{row.result.p50_ms:>8.1f}"
            f"{row.result.p99_ms:>8.1f}{row.hello.requests_per_second:>7.0f}"
            f"{row.hello.p99_ms:>7.1f}{row.ratio:>7.0%}"
            f"{row.result.requests_per_cpu_second:>10.0f}"
            f"{row.hello.requests_per_cpu_second:>7.0f}{row.cpu_ratio:>7.0%}{errors:>7}"
            f"{row.result.bytes_per_request:>7.0f}"
        )
    for name, reason in skipped:
        print(f"{name:<34}skipped: {reason}")
    print(
        "hello, p99: the hello run paired with the row (median); "
        "ratio: req/s over the hello run just before; req/CPU-s: requests per second of server "
        "CPU (user+system of the hypercorn processes), the share a busy machine cannot skew; "
        "B/req: response bytes per request (headers and body) as wrk read them\n"
        f"files in {workdir}"
    )


def _wrk_extras(headers: dict[str, str] | None, script: Path | None) -> list[str]:
    """wrk's -H and -s arguments."""
    extras: list[str] = []
    for name, value in (headers or {}).items():
        extras += ["-H", f"{name}: {value}"]
    if script is not None:
        extras += ["-s", str(script)]
    return extras


def _median_run(runs: list[WrkResult]) -> WrkResult:
    return sorted(runs, key=lambda run: run.requests_per_second)[len(runs) // 2]


if __name__ == "__main__":
    main()
