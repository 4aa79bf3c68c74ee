"""Load benchmark: wallet checkouts by many concurrent shoppers, then an invariant audit.

    .venv/bin/python bench/checkout.py [--database postgresql|sqlite|both] [--shoppers 50]
        [--checkouts 2000] [--drive service|http|steps] [--processes 2] [--pool-size 5]

Makes a throwaway database (PostgreSQL: a new database on TEST_DATABASE_URL's server, dropped
afterwards; SQLite: a temporary file), creates the tables and seeds one shopper per checkout with
wallet balance and a filled cart (two lines over 40 products, every third cart with a
10 % coupon), then lets `--shoppers` concurrent shoppers pay for those carts.

--drive service: each shopper is a task calling what POST /pay/wallet calls (place_wallet_order
for the shopper's own cart inside run_write_with_retries, one session per checkout), spread over
`--processes` worker processes with `--pool-size` PostgreSQL connections each. --drive http: the
real app under hypercorn (2 uvloop workers); each shopper first opens GET /checkout (untimed, for
its session cookie and CSRF token), then `--shoppers` httpx clients post the checkout forms.
--drive steps: the service call, one shopper at a time in this process, with a CPU timer around
each step of place_wallet_order; reports the app's CPU per step and per checkout.

Reports checkouts/s, p50/p99 latency of a checkout, and CPU per checkout (the app's processes and
the PostgreSQL backends serving the benchmark's database) — the figure that other load on a shared
machine cannot skew. Then audits the database: every wallet's balance equals the sum of its
ledger entries, no negative balance or stock, stock + sold = stock at the start for every
product, one payment entry per order for exactly its total, coupon uses equal redemptions, two
outbox emails per order, no cart lines left behind. Exits non-zero on any violation.
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402

from storefront.db.engine import dialect_name, make_engine, make_sessionmaker  # noqa: E402
from storefront.models import (  # noqa: E402
    Base,
    Cart,
    CartItem,
    Coupon,
    CouponRedemption,
    Login,
    Order,
    OrderLine,
    OutboxEmail,
    Product,
    User,
    Wallet,
    WalletEntry,
    utcnow,
)
from storefront.services.users import login_token_hash  # noqa: E402

PG_SERVER_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
HOST = "127.0.0.1"
PRODUCTS = 40
PRODUCT_PRICE_MINOR = 2_500
START_BALANCE_MINOR = 10_000_000
COUPON_CODE = "BENCH10"
ADMIN_EMAIL = "orders-desk@example.com"
SECRET_KEY = "bench-secret-key-" + "x" * 40
PHONE = "024 123 4567"
ADDRESS = "12 Oxford Street, Osu, Accra"


@dataclass
class Shopper:
    user_id: int
    email: str
    login_token: str
    expected_total_minor: int


@dataclass
class RunResult:
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    app_cpu_seconds: float = 0.0
    postgres_cpu_seconds: float = 0.0
    step_cpu_seconds: dict[str, float] = field(default_factory=dict)


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_where(predicate: Any) -> list[int]:
    """Processes whose (command line, process group) the predicate accepts."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if predicate(command, int(fields[2])):  # fields[2]: the process group
            pids.append(int(entry))
    return pids


def postgres_backend_cpu(database: str) -> dict[int, float]:
    """CPU used so far by each PostgreSQL backend serving this database (its title names it)."""
    pids = _pids_where(
        lambda command, _group: command.startswith("postgres: ") and f" {database} " in command
    )
    return {pid: _process_cpu_seconds(pid) for pid in pids}


class PostgresCpuMeter:
    """Samples the database's backends while a run goes on: a backend that exits when its
    pool is disposed takes its CPU figure with it, so the last sample before that counts."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.first = postgres_backend_cpu(database)
        self.last = dict(self.first)
        self.stopped = asyncio.Event()

    async def run(self, interval: float = 0.2) -> None:
        while not self.stopped.is_set():
            self.last.update(postgres_backend_cpu(self.database))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), interval)

    def stop(self) -> float:
        self.last.update(postgres_backend_cpu(self.database))
        self.stopped.set()
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def process_group_cpu_seconds(group: int) -> float:
    pids = _pids_where(lambda _command, process_group: process_group == group)
    return sum(_process_cpu_seconds(pid) for pid in pids)


# --- databases -----------------------------------------------------------------------------


async def create_database(backend: str) -> tuple[str, str]:
    """A fresh database URL and a handle for dropping it."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="storefront-bench-")
        return f"sqlite+aiosqlite:///{folder}/bench.db", folder
    import asyncpg

    name = f"storefront_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_SERVER_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{PG_SERVER_URL.rsplit('/', 1)[0]}/{name}", name


async def drop_database(backend: str, handle: str) -> None:
    if backend == "sqlite":
        shutil.rmtree(handle, ignore_errors=True)
        return
    import asyncpg

    admin = await asyncpg.connect(PG_SERVER_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{handle}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed(url: str, checkouts: int) -> list[Shopper]:
    """Tables, products, a coupon, and one shopper with balance and a filled cart per checkout."""
    from storefront.services.users import hash_password

    engine = make_engine(url)
    password_hash = hash_password("bench password")
    now = utcnow()
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(
            insert(Product),
            [
                {
                    "slug": f"bench-{number}",
                    "name": f"Bench product {number}",
                    "description": "",
                    "price_minor": PRODUCT_PRICE_MINOR + number * 100,
                    "stock": 10 * checkouts,
                    "image": "",
                    "is_active": True,
                    "created_at": now,
                    "updated_at": now,
                }
                for number in range(PRODUCTS)
            ],
        )
        await connection.execute(
            insert(Coupon).values(
                code=COUPON_CODE,
                kind="percent",
                value=1000,
                min_subtotal_minor=0,
                uses=0,
                is_active=True,
                created_at=now,
            )
        )
        prices = {
            row.id: row.price_minor
            for row in await connection.execute(select(Product.id, Product.price_minor))
        }
        product_ids = sorted(prices)
        shoppers: list[Shopper] = []
        batch = 500
        for start in range(0, checkouts, batch):
            numbers = range(start, min(start + batch, checkouts))
            users = [
                {
                    "email": f"bench-{number}-{uuid.uuid4().hex[:6]}@example.com",
                    "password_hash": password_hash,
                    "name": f"Shopper {number}",
                    "phone": "",
                    "role": "customer",
                    "is_active": True,
                    "created_at": now,
                }
                for number in numbers
            ]
            rows = (
                await connection.execute(insert(User).returning(User.id, User.email), users)
            ).all()
            user_ids = [row.id for row in rows]
            login_tokens = [secrets.token_urlsafe(32) for _ in user_ids]
            await connection.execute(
                insert(Login),
                [
                    {"user_id": user_id, "token_hash": login_token_hash(token), "created_at": now}
                    for user_id, token in zip(user_ids, login_tokens, strict=True)
                ],
            )
            wallet_rows = (
                await connection.execute(
                    insert(Wallet).returning(Wallet.id, Wallet.user_id),
                    [
                        {
                            "user_id": user_id,
                            "balance_minor": START_BALANCE_MINOR,
                            "currency": "GHS",
                            "updated_at": now,
                        }
                        for user_id in user_ids
                    ],
                )
            ).all()
            await connection.execute(
                insert(WalletEntry),
                [
                    {
                        "wallet_id": row.id,
                        "amount_minor": START_BALANCE_MINOR,
                        "kind": "adjustment",
                        "source_reference": f"bench-start-{row.user_id}",
                        "balance_after_minor": START_BALANCE_MINOR,
                        "note": "bench balance",
                        "actor": "bench",
                        "created_at": now,
                    }
                    for row in wallet_rows
                ],
            )
            cart_rows = (
                await connection.execute(
                    insert(Cart).returning(Cart.id, Cart.user_id),
                    [
                        {
                            "token": secrets.token_urlsafe(24),
                            "user_id": user_id,
                            "coupon_code": COUPON_CODE if number % 3 == 0 else None,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for number, user_id in zip(numbers, user_ids, strict=True)
                    ],
                )
            ).all()
            cart_of = {row.user_id: row.id for row in cart_rows}
            items = []
            for number, row, login_token in zip(numbers, rows, login_tokens, strict=True):
                first = product_ids[number % PRODUCTS]
                second = product_ids[(number * 7 + 3) % PRODUCTS]
                lines = {first: 1} if first == second else {first: 1, second: 2}
                subtotal = sum(prices[product] * qty for product, qty in lines.items())
                discount = (subtotal * 1000 + 5000) // 10000 if number % 3 == 0 else 0
                items += [
                    {"cart_id": cart_of[row.id], "product_id": product, "quantity": qty}
                    for product, qty in lines.items()
                ]
                shoppers.append(Shopper(row.id, row.email, login_token, subtotal - discount))
            await connection.execute(insert(CartItem), items)
    await engine.dispose()
    return shoppers


# --- driving the service directly ------------------------------------------------------------


async def _service_worker_run(
    url: str, shoppers: list[Shopper], concurrency: int, pool_size: int
) -> RunResult:
    from storefront.db.transactions import ShopBusy, run_write_with_retries
    from storefront.services.checkout.refusals import CheckoutError

    kwargs: dict[str, Any] = {}
    if dialect_name(url) != "sqlite":
        kwargs = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 120}
    engine = make_engine(url, **kwargs)
    sessionmaker = make_sessionmaker(engine)
    result = RunResult()
    queue: asyncio.Queue[Shopper] = asyncio.Queue()
    for shopper in shoppers:
        queue.put_nowait(shopper)

    async def checkout(shopper: Shopper) -> None:
        started = time.perf_counter()
        try:
            async with sessionmaker() as session:
                await run_write_with_retries(session, wallet_checkout(shopper))
            result.outcomes["paid"] += 1
        except (CheckoutError, ShopBusy) as refused:
            result.outcomes[f"refused: {type(refused).__name__}: {refused}"] += 1
        except Exception as error:  # noqa: BLE001 - counted and reported as a failure
            result.outcomes[f"ERROR: {type(error).__name__}: {error}"[:200]] += 1
        result.latencies_ms.append((time.perf_counter() - started) * 1000)

    async def shopper_task() -> None:
        while not queue.empty():
            await checkout(queue.get_nowait())

    # Warm the pool so connection set-up is not measured.
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.gather(*(shopper_task() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    result.app_cpu_seconds = time.process_time() - cpu_started
    await engine.dispose()
    return result


def _service_process(
    url: str, shoppers: list[Shopper], concurrency: int, pool_size: int, out: Any
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_service_worker_run(url, shoppers, concurrency, pool_size))
    out.put((result.latencies_ms, dict(result.outcomes), result.seconds, result.app_cpu_seconds))


def drive_service(
    url: str, shoppers: list[Shopper], concurrency: int, processes: int, pool_size: int
) -> RunResult:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    shares = [shoppers[number::processes] for number in range(processes)]
    per_process = [
        concurrency // processes + (1 if n < concurrency % processes else 0)
        for n in range(processes)
    ]
    workers = [
        context.Process(target=_service_process, args=(url, share, tasks, pool_size, out))
        for share, tasks in zip(shares, per_process, strict=True)
    ]
    for worker in workers:
        worker.start()
    result = RunResult()
    for _ in workers:
        latencies, outcomes, seconds, app_cpu_seconds = out.get()
        result.app_cpu_seconds += app_cpu_seconds
        result.latencies_ms += latencies
        result.outcomes.update(outcomes)
        result.seconds = max(result.seconds, seconds)
    for worker in workers:
        worker.join()
    return result


# --- one checkout at a time, CPU per step ---------------------------------------------------


def wallet_checkout(shopper: Shopper) -> Callable[[Any], Awaitable[Order]]:
    """What POST /pay/wallet runs for the shopper (None: their own cart, locked in the write)."""
    from storefront.services.checkout import placement

    user = User(id=shopper.user_id, email=shopper.email)

    async def place(session: Any) -> Order:
        return await placement.place_wallet_order(
            session,
            user,
            None,
            "address",
            PHONE,
            ADDRESS,
            utcnow(),
            expected_total_minor=shopper.expected_total_minor,
            admin_email=ADMIN_EMAIL,
            base_url="https://shop.example.com",
        )

    return place


# The steps of place_wallet_order, in the order it takes them (each a name in its module).
CHECKOUT_STEPS = (
    "lock_cart",
    "_plan",
    "_insert_order",
    "debit_wallet",
    "transition_order",
    "queue_order_emails",
    "clear_cart",
    "_take_stock_and_coupon",
)


@contextlib.contextmanager
def timed_steps(module: Any, names: tuple[str, ...], spent: dict[str, float]) -> Any:
    """Wrap each named coroutine function of `module` in a CPU timer while the block runs."""
    originals = {name: getattr(module, name) for name in names}

    def timed(name: str, original: Any) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return await original(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - started

        return run

    for name, original in originals.items():
        setattr(module, name, timed(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


async def drive_steps(url: str, shoppers: list[Shopper]) -> RunResult:
    from storefront.db.transactions import run_write_with_retries
    from storefront.services.checkout import placement

    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    result = RunResult()
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    meter = PostgresCpuMeter(url.rsplit("/", 1)[1]) if dialect_name(url) != "sqlite" else None
    started = time.perf_counter()
    with timed_steps(placement, CHECKOUT_STEPS, result.step_cpu_seconds):
        for shopper in shoppers:
            checkout_started = time.perf_counter()
            cpu_started = time.process_time()
            async with sessionmaker() as session:
                await run_write_with_retries(session, wallet_checkout(shopper))
            result.app_cpu_seconds += time.process_time() - cpu_started
            result.latencies_ms.append((time.perf_counter() - checkout_started) * 1000)
            result.outcomes["paid"] += 1
    result.seconds = time.perf_counter() - started
    if meter is not None:
        result.postgres_cpu_seconds = meter.stop()
    await engine.dispose()
    return result


# --- driving HTTP under hypercorn ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _auth_cookie_maker(url: str) -> Any:
    """quart-auth's own signing, with the secret key the served app uses."""
    from storefront import create_app

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": SECRET_KEY})
    auth = app.extensions["QUART_AUTH"][0]
    return lambda auth_token: auth.dump_token(auth_token, app)


async def drive_http(url: str, shoppers: list[Shopper], concurrency: int) -> RunResult:
    with tempfile.TemporaryFile() as server_log:
        return await _drive_http(url, shoppers, concurrency, server_log)


async def _drive_http(
    url: str, shoppers: list[Shopper], concurrency: int, server_log: Any
) -> RunResult:
    import httpx

    database = url.rsplit("/", 1)[1]
    port = _free_port()
    auth_cookie = _auth_cookie_maker(url)
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET_KEY,
        "STOREFRONT_ENV": "development",
        "QUART_AUTH_COOKIE_SECURE": "false",
        "RATELIMIT_ENABLED": "false",
        "OUTBOX_SENDER_ENABLED": "false",
        "RECONCILER_ENABLED": "false",
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "PAYSTACK_PUBLIC_KEY": "",
        "PAYSTACK_SECRET_KEY": "",
        "MAIL_SERVER": "",
    }
    server = await asyncio.create_subprocess_exec(
        *[
            str(ROOT / ".venv/bin/hypercorn"),
            "--workers",
            "2",
            "--worker-class",
            "uvloop",
            "--bind",
            f"{HOST}:{port}",
            "run:app",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=server_log,
        start_new_session=True,
    )
    base = f"http://{HOST}:{port}"
    result = RunResult()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as probe:
            for _ in range(200):
                try:
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                server_log.seek(0)
                raise SystemExit("hypercorn did not start: " + server_log.read().decode())
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        clients = [
            httpx.AsyncClient(base_url=base, timeout=120, limits=limits) for _ in range(concurrency)
        ]
        # Untimed: every shopper opens the checkout page once (session cookie, CSRF token).
        signed_in: asyncio.Queue[tuple[Shopper, dict[str, str]]] = asyncio.Queue()
        pending: asyncio.Queue[Shopper] = asyncio.Queue()
        for shopper in shoppers:
            pending.put_nowait(shopper)

        async def open_checkout(client: httpx.AsyncClient) -> None:
            while not pending.empty():
                shopper = pending.get_nowait()
                client.cookies.clear()
                client.cookies.set("storefront_auth", auth_cookie(shopper.login_token))
                page = await client.get("/checkout")
                if 'name="total_minor"' not in page.text:
                    raise SystemExit(f"checkout page not shown: HTTP {page.status_code}")
                token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
                signed_in.put_nowait((shopper, {**dict(client.cookies), "csrf": token}))

        await asyncio.gather(*(open_checkout(client) for client in clients))

        async def pay(client: httpx.AsyncClient) -> None:
            while not signed_in.empty():
                shopper, cookies = signed_in.get_nowait()
                token = cookies.pop("csrf")
                client.cookies.clear()
                for name, value in cookies.items():
                    client.cookies.set(name, value)
                form = {
                    "csrf_token": token,
                    "delivery": "address",
                    "phone": PHONE,
                    "address": ADDRESS,
                    "payment_method": "wallet",
                    "total_minor": str(shopper.expected_total_minor),
                }
                started = time.perf_counter()
                response = await client.post(
                    "/pay/wallet", data=form, headers={"HX-Request": "true"}
                )
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code == 204:
                    result.outcomes["paid"] += 1
                else:
                    result.outcomes[f"HTTP {response.status_code}"] += 1

        started = time.perf_counter()
        server_cpu_started = process_group_cpu_seconds(server.pid)
        meter = PostgresCpuMeter(database)
        sampling = asyncio.create_task(meter.run())
        await asyncio.gather(*(pay(client) for client in clients))
        result.seconds = time.perf_counter() - started
        result.app_cpu_seconds = process_group_cpu_seconds(server.pid) - server_cpu_started
        result.postgres_cpu_seconds = meter.stop()
        await sampling
        for client in clients:
            await client.aclose()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        await asyncio.wait_for(server.wait(), timeout=30)
    return result


# --- the audit ------------------------------------------------------------------------------


async def audit(url: str, checkouts: int) -> list[str]:
    """Every invariant checkout must keep; a list of what is violated (empty when none)."""
    from storefront.services.wallet import select_ledger_mismatches

    engine = make_engine(url)
    violations: list[str] = []
    async with make_sessionmaker(engine)() as session:
        mismatches = await select_ledger_mismatches(session)
        if mismatches:
            violations.append(
                f"{len(mismatches)} wallets differ from their ledger: {mismatches[:3]}"
            )
        negative = await session.scalar(
            select(func.count()).select_from(Wallet).where(Wallet.balance_minor < 0)
        )
        if negative:
            violations.append(f"{negative} negative balances")
        sold = {
            row[0]: int(row[1])
            for row in await session.execute(
                select(OrderLine.product_id, func.sum(OrderLine.quantity))
                .join(Order, Order.id == OrderLine.order_id)
                .where(Order.status == "paid")
                .group_by(OrderLine.product_id)
            )
        }
        for product_id, stock in await session.execute(select(Product.id, Product.stock)):
            if stock < 0:
                violations.append(f"product {product_id} has stock {stock}")
            if stock + int(sold.get(product_id, 0)) != 10 * checkouts:
                violations.append(
                    f"product {product_id}: stock {stock} + sold "
                    f"{sold.get(product_id, 0)} != {10 * checkouts}"
                )
        orders = await session.scalar(select(func.count()).select_from(Order))
        paid = await session.scalar(
            select(func.count()).select_from(Order).where(Order.status == "paid")
        )
        if orders != paid:
            violations.append(f"{orders - paid} orders left unpaid")
        unmatched = await session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                ~select(WalletEntry.id)
                .where(
                    WalletEntry.kind == "payment",
                    WalletEntry.source_reference == Order.number,
                    WalletEntry.amount_minor == -Order.total_minor,
                )
                .exists()
            )
        )
        if unmatched:
            violations.append(f"{unmatched} orders without their exact payment entry")
        payments = await session.scalar(
            select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "payment")
        )
        if payments != orders:
            violations.append(f"{payments} payment entries for {orders} orders")
        uses = await session.scalar(select(Coupon.uses).where(Coupon.code == COUPON_CODE))
        redemptions = await session.scalar(select(func.count()).select_from(CouponRedemption))
        if uses != redemptions:
            violations.append(f"coupon uses {uses} != redemptions {redemptions}")
        emails = await session.scalar(select(func.count()).select_from(OutboxEmail))
        if emails != 2 * orders:
            violations.append(f"{emails} outbox emails for {orders} orders")
        left_in_carts = await session.scalar(
            select(func.count())
            .select_from(CartItem)
            .join(Cart, Cart.id == CartItem.cart_id)
            .join(Order, Order.user_id == Cart.user_id)
        )
        if left_in_carts:
            violations.append(f"{left_in_carts} cart lines left after their order")
    await engine.dispose()
    return violations + ([] if orders else ["no orders were placed"])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def bench(backend: str, args: argparse.Namespace) -> bool:
    load_before = " ".join(f"{load:.2f}" for load in os.getloadavg())
    url, handle = await create_database(backend)
    try:
        shoppers = await seed(url, args.checkouts)
        if args.drive == "http":
            result = await drive_http(url, shoppers, args.shoppers)
            how = (
                "HTTP POST /pay/wallet via hypercorn (2 uvloop workers), "
                "httpx clients on the same machine"
            )
        elif args.drive == "steps":
            result = await drive_steps(url, shoppers)
            how = "service, one shopper at a time, CPU timed per step"
        else:
            meter = PostgresCpuMeter(url.rsplit("/", 1)[1])
            sampling = asyncio.create_task(meter.run())
            result = await asyncio.to_thread(
                drive_service, url, shoppers, args.shoppers, args.processes, args.pool_size
            )
            result.postgres_cpu_seconds = meter.stop()
            await sampling
            how = (
                f"service (place_wallet_order in run_write_with_retries, as POST /pay/wallet), "
                f"{args.processes} process(es), PostgreSQL pool {args.pool_size} per process"
            )
        violations = await audit(url, args.checkouts)
    finally:
        await drop_database(backend, handle)
    paid = result.outcomes.get("paid", 0)
    shoppers_at_once = 1 if args.drive == "steps" else args.shoppers
    print(f"\n== Wallet checkout on {backend}: {shoppers_at_once} concurrent shoppers, {how}")
    print(
        f"   checkouts paid: {paid} of {args.checkouts} in {result.seconds:.2f} s "
        f"= {paid / result.seconds:.0f} checkouts/s"
    )
    print(
        f"   latency ms: p50 {statistics.median(result.latencies_ms):.1f}  "
        f"p99 {percentile(result.latencies_ms, 0.99):.1f}  "
        f"max {max(result.latencies_ms):.1f}"
    )
    cpu_seconds = result.app_cpu_seconds + result.postgres_cpu_seconds
    if paid and cpu_seconds:
        per_cpu_second = paid / cpu_seconds
        print(
            f"   CPU per checkout: app {result.app_cpu_seconds / paid * 1000:.1f} ms + "
            f"PostgreSQL {result.postgres_cpu_seconds / paid * 1000:.1f} ms = "
            f"{per_cpu_second:.0f} checkouts per CPU-second "
            f"(≈ {per_cpu_second * (os.cpu_count() or 1):.0f}/s if all "
            f"{os.cpu_count()} cores were this benchmark's)"
        )
    if paid and result.step_cpu_seconds:
        steps = "  ".join(
            f"{name.strip('_')} {result.step_cpu_seconds.get(name, 0.0) / paid * 1000:.2f}"
            for name in CHECKOUT_STEPS
        )
        rest = result.app_cpu_seconds - sum(result.step_cpu_seconds.values())
        print(f"   app CPU ms per checkout by step: {steps}  rest {rest / paid * 1000:.2f}")
    print(f"   load average before: {load_before}")
    for outcome, count in sorted(result.outcomes.items()):
        if outcome != "paid":
            print(f"   {count} × {outcome}")
    print(f"   invariant violations: {len(violations)}")
    for violation in violations:
        print(f"     - {violation}")
    return not violations and paid == args.checkouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--shoppers", type=int, default=50)
    parser.add_argument("--checkouts", type=int, default=2000)
    parser.add_argument("--drive", choices=["service", "http", "steps"], default="service")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--pool-size", type=int, default=5, help="PostgreSQL connections per process (service)"
    )
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.database == "both" else [args.database]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ok = all([asyncio.run(bench(backend, args)) for backend in backends])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
