"""Benchmark: drain 1,000 queued emails to a local aiosmtpd through the app's own sender task,
and compare page latency while it drains with the idle latency.

    .venv/bin/python bench/outbox_drain.py [--emails 1000] [--repeat 3] [--concurrency 4]
                                           [--smtp-nice 0] [--workers 1] [--database-url URL]

Makes a fresh SQLite database (or uses the PostgreSQL URL given, which must be an empty
database), starts aiosmtpd (a discarding sink, in its own process) and the shop under hypercorn
with OUTBOX_SENDER_ENABLED=1, with the demo catalogue (`storefront seed-demo`'s data). Measures
sequential GET /healthz, /readyz (database + outbox backlog query), / (home page) and one product
page latency idle, then commits the emails in one
transaction (as checkouts would, via queue_email) and measures the same pages until every row is
`sent`. That idle-then-drain pair repeats `--repeat` times and each drain is compared with the
idle phase just before it, so load from other processes on the machine weighs on both sides
alike. Prints, per round, drain time, emails/s, p50 latencies and the CPU seconds each process
used while draining, then the medians over the rounds.
"""

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from storefront.db.engine import make_engine, make_sessionmaker  # noqa: E402
from storefront.db.transactions import write_transaction  # noqa: E402
from storefront.demo import seed_demo  # noqa: E402
from storefront.models import Base, OutboxEmail, Product  # noqa: E402
from storefront.services.outbox.queueing import queue_email  # noqa: E402

HOST = "127.0.0.1"
PROBE_PATHS = ["/healthz", "/readyz", "/"]  # + a product page once the catalogue exists


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    def __str__(self) -> str:
        return (
            f"p50 {self.p50_ms:6.2f} ms  p95 {self.p95_ms:6.2f} ms  mean {self.mean_ms:6.2f} ms"
            f"  ({self.samples} requests)"
        )


def summarise(latencies_ms: list[float]) -> Latency:
    ordered = sorted(latencies_ms)
    return Latency(
        samples=len(ordered),
        p50_ms=statistics.median(ordered),
        p95_ms=ordered[int(len(ordered) * 0.95) - 1],
        mean_ms=statistics.fmean(ordered),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


async def wait_for_port(port: int, within_seconds: float = 20) -> None:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise SystemExit(f"nothing listens on {HOST}:{port} after {within_seconds}s")


async def probe(client: httpx.AsyncClient, path: str) -> float:
    started = time.perf_counter()
    response = await client.get(path)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:200]}")
    return elapsed_ms


async def probe_until(
    client: httpx.AsyncClient, stop: asyncio.Event | None, count: int = 0
) -> dict[str, list[float]]:
    """Sequential requests, alternating the probe paths, `count` rounds or until `stop`."""
    latencies: dict[str, list[float]] = {path: [] for path in PROBE_PATHS}
    rounds = 0
    while (stop is not None and not stop.is_set()) or (stop is None and rounds < count):
        for path in PROBE_PATHS:
            latencies[path].append(await probe(client, path))
        rounds += 1
    return latencies


async def queue_emails(database_url: str, count: int, prefix: str) -> None:
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    async with sessions() as session, write_transaction(session):
        for number in range(count):
            await queue_email(
                session,
                f"shopper{number}@example.com",
                "test_email",
                {"sent_by": "bench/outbox_drain.py"},
                f"{prefix}{number}",
            )
    await engine.dispose()


async def watch_drain(database_url: str, prefix: str, count: int, drained: asyncio.Event) -> None:
    engine = make_engine(database_url)
    async with make_sessionmaker(engine)() as session:
        while True:
            sent = await session.scalar(
                select(func.count())
                .select_from(OutboxEmail)
                .where(OutboxEmail.status == "sent", OutboxEmail.dedupe_key.startswith(prefix))
            )
            await session.rollback()
            if sent >= count:
                break
            await asyncio.sleep(0.05)
    drained.set()
    await engine.dispose()


async def sent_spread_seconds(database_url: str, prefix: str) -> float:
    engine = make_engine(database_url)
    async with make_sessionmaker(engine)() as session:
        first, last = (
            await session.execute(
                select(func.min(OutboxEmail.sent_at), func.max(OutboxEmail.sent_at)).where(
                    OutboxEmail.dedupe_key.startswith(prefix)
                )
            )
        ).one()
    await engine.dispose()
    return (last - first).total_seconds()


@dataclass(frozen=True)
class Round:
    queue_seconds: float
    drain_seconds: float
    busy_seconds: float
    cpu_seconds: dict[str, float]
    idle: dict[str, Latency]
    draining: dict[str, Latency]


async def measure_round(
    client: httpx.AsyncClient,
    database_url: str,
    arguments: argparse.Namespace,
    processes: dict[str, subprocess.Popen[bytes]],
    number: int,
) -> Round:
    """Idle latency, then queue the emails and measure latency until they are all sent."""
    idle = await probe_until(client, None, count=arguments.idle_rounds)
    prefix = f"bench:{number}:"
    drained = asyncio.Event()
    queue_started = time.perf_counter()
    await queue_emails(database_url, arguments.emails, prefix)
    committed = time.perf_counter()
    cpu_before = {name: cpu_seconds(process.pid) for name, process in processes.items()}
    watcher = asyncio.create_task(watch_drain(database_url, prefix, arguments.emails, drained))
    draining = await probe_until(client, drained)
    await watcher
    finished = time.perf_counter()
    return Round(
        queue_seconds=committed - queue_started,
        drain_seconds=finished - committed,
        busy_seconds=await sent_spread_seconds(database_url, prefix),
        cpu_seconds={
            name: cpu_seconds(process.pid) - cpu_before[name] for name, process in processes.items()
        },
        idle={path: summarise(samples) for path, samples in idle.items()},
        draining={path: summarise(samples) for path, samples in draining.items()},
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (hypercorn serves from a child process)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def run(arguments: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    database_url = arguments.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    engine = make_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with make_sessionmaker(engine)() as session, write_transaction(session):
        await seed_demo(session)
        product_slug = await session.scalar(
            select(Product.slug).where(Product.is_active.is_(True)).order_by(Product.id).limit(1)
        )
    await engine.dispose()
    PROBE_PATHS.append(f"/products/{product_slug}")

    smtp_port, http_port = free_port(), free_port()
    # --smtp-nice 19 gives the local SMTP server only CPU nobody else wants, closer to an SMTP
    # server on another machine (on 2 cores it otherwise competes with the web worker).
    smtp = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        ["nice", "-n", str(arguments.smtp_nice), sys.executable, "-m", "aiosmtpd", "-n",
         "-l", f"{HOST}:{smtp_port}", "-c", "aiosmtpd.handlers.Sink"],
    )  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
        "STOREFRONT_ENV": "development",
        "MAIL_SERVER": HOST,
        "MAIL_PORT": str(smtp_port),
        "MAIL_USE_SSL": "0",
        "MAIL_USE_TLS": "0",
        "SENDGRID_API_KEY": "",
        "OUTBOX_SENDER_ENABLED": "1",
        "OUTBOX_POLL_SECONDS": "1",
        "OUTBOX_SEND_CONCURRENCY": str(arguments.concurrency),
        "RECONCILER_ENABLED": "0",
        "RATELIMIT_ENABLED": "0",
    }
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, "-m", "hypercorn", "--worker-class", "uvloop", "--workers",
         str(arguments.workers), "--bind", f"{HOST}:{http_port}", "run:app"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    processes = {"hypercorn (app + sender)": server, "aiosmtpd": smtp}
    rounds: list[Round] = []
    try:
        await wait_for_port(smtp_port)
        await wait_for_port(http_port)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{http_port}") as client:
            await probe_until(client, None, count=50)  # warm up
            for number in range(arguments.repeat):
                rounds.append(
                    await measure_round(client, database_url, arguments, processes, number)
                )
    finally:
        for process in (server, smtp):
            process.send_signal(signal.SIGTERM)
        for process in (server, smtp):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    report(arguments, database_url, rounds)


def report(arguments: argparse.Namespace, database_url: str, rounds: list[Round]) -> None:
    emails = arguments.emails
    print(
        f"database: {database_url.split('://')[0]}   hypercorn workers: {arguments.workers}"
        f"   send concurrency: {arguments.concurrency}   emails per round: {emails}"
        f"   aiosmtpd nice: {arguments.smtp_nice}"
        f"   load average: {os.getloadavg()[0]:.1f}"
    )
    print("round  queue s  drain s  emails/s  busy s  app CPU s  aiosmtpd CPU s")
    for number, one in enumerate(rounds, 1):
        cpu_app, cpu_smtp = one.cpu_seconds.values()
        print(
            f"{number:5}  {one.queue_seconds:7.2f}  {one.drain_seconds:7.2f}"
            f"  {emails / one.drain_seconds:8.0f}  {one.busy_seconds:6.2f}"
            f"  {cpu_app:9.2f}  {cpu_smtp:14.2f}"
        )
    drain_median = statistics.median(one.drain_seconds for one in rounds)
    print(
        f"median drain (commit -> every row sent, incl. up to 1 s poll wake-up): "
        f"{drain_median:.2f} s = {emails / drain_median:.0f} emails/s"
    )
    print("p50 latency, idle -> draining, per round; then the median change")
    for path in PROBE_PATHS:
        cells, ratios = [], []
        for one in rounds:
            idle_p50, drain_p50 = one.idle[path].p50_ms, one.draining[path].p50_ms
            ratios.append(drain_p50 / idle_p50)
            cells.append(f"{idle_p50:5.2f}->{drain_p50:5.2f} ms")
        change = (statistics.median(ratios) - 1) * 100
        print(f"GET {path:24} " + "  ".join(cells) + f"   median {change:+.0f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4, help="OUTBOX_SEND_CONCURRENCY")
    parser.add_argument("--smtp-nice", type=int, default=0, help="nice level of aiosmtpd")
    parser.add_argument("--idle-rounds", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3, help="idle-then-drain rounds")
    parser.add_argument("--database-url", default="")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
