"""`storefront serve` as operators run it: real worker processes on a real port, killed for real."""

import asyncio
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from storefront.supervisor import stop_when_orphaned
from tests.live import create_tables, free_port

STOREFRONT = Path(sys.executable).with_name("storefront")
SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
STARTUP_SECONDS = 60


@dataclass
class Served:
    process: asyncio.subprocess.Process
    port: int
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait(self, seconds: float = STARTUP_SECONDS) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), seconds)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"storefront serve kept running:\n{self.stderr}") from None


async def start_serve(tmp_path: Path, *, toml_extra: str = "", **env_settings: str) -> Served:
    port = free_port()
    config_path = tmp_path / "hypercorn.toml"
    config_path.write_text(
        f'bind = ["127.0.0.1:{port}"]\nworkers = 2\nworker_class = "uvloop"\n'
        f'graceful_timeout = 3\nerrorlog = "-"\n{toml_extra}'
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "STOREFRONT_ENV": "development",
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}",
        "QUART_AUTH_COOKIE_SECURE": "False",
        "OUTBOX_SENDER_ENABLED": "false",
        "RECONCILER_ENABLED": "false",
        **env_settings,
    }
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr, (tmp_path / "serve.stdout").open("wb") as stdout:
        process = await asyncio.create_subprocess_exec(
            str(STOREFRONT),
            "serve",
            "--config",
            str(config_path),
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=tmp_path,
        )
    return Served(process, port, stderr_path)


def worker_pids(supervisor_pid: int) -> set[int]:
    """The supervisor's live worker processes (not multiprocessing's resource tracker)."""
    children: set[int] = set()
    for task in Path(f"/proc/{supervisor_pid}/task").glob("*"):
        try:
            children.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    workers = set()
    for pid in children:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except FileNotFoundError:
            continue
    return workers


def is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def until(condition, served: Served, what: str, seconds: float = STARTUP_SECONDS) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if served.process.returncode is not None:
            raise AssertionError(
                f"storefront serve ended while waiting for {what}:\n{served.stderr}"
            )
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {what} within {seconds} s:\n{served.stderr}")
        await asyncio.sleep(0.05)


async def get_home_retrying_once(client: httpx.AsyncClient) -> str:
    """GET /: the status code, or the error after one retry on a fresh connection."""
    try:
        return str((await client.get("/")).status_code)
    except httpx.TransportError:
        pass
    try:
        async with httpx.AsyncClient(base_url=client.base_url, timeout=20) as fresh_client:
            return str((await fresh_client.get("/")).status_code)
    except httpx.TransportError as error:
        return f"{type(error).__name__}: {error}"


async def shop_traffic(client: httpx.AsyncClient, stop: asyncio.Event, outcomes: list[str]) -> None:
    while not stop.is_set():
        outcomes.append(await get_home_retrying_once(client))


async def test_one_worker_crash_no_longer_stops_the_whole_shop(tmp_path):
    await create_tables(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    served = await start_serve(tmp_path)
    supervisor_pid = served.process.pid
    await until(lambda: served.stderr.count("Running on") == 2, served, "2 serving workers")
    first_workers = worker_pids(supervisor_pid)
    assert len(first_workers) == 2

    outcomes: list[str] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}", timeout=20) as client:
        traffic = [asyncio.create_task(shop_traffic(client, stop, outcomes)) for _ in range(4)]
        await until(lambda: len(outcomes) >= 20, served, "20 answers before the kill")
        killed = min(first_workers)
        os.kill(killed, signal.SIGKILL)
        answered_at_kill = len(outcomes)

        await until(
            lambda: (
                len(worker_pids(supervisor_pid) - first_workers) == 1
                and served.stderr.count("Running on") == 3
            ),
            served,
            "a new worker serving",
        )
        await until(lambda: len(outcomes) >= answered_at_kill + 40, served, "answers after")
        stop.set()
        await asyncio.gather(*traffic)

    assert [outcome for outcome in outcomes if outcome != "200"] == []
    assert len(worker_pids(supervisor_pid)) == 2
    assert f"worker {killed} was killed by SIGKILL" in served.stderr

    served.process.send_signal(signal.SIGTERM)
    assert await served.wait(seconds=30) == 0, served.stderr
    assert not [pid for pid in first_workers | worker_pids(supervisor_pid) if is_running(pid)]
    assert not port_is_open(served.port)


async def test_serve_refuses_an_unsafe_configuration_with_one_line(tmp_path):
    served = await start_serve(tmp_path, STOREFRONT_ENV="production", SECRET_KEY="changeme")
    assert await served.wait() == 78
    lines = served.stderr.strip().splitlines()
    assert len(lines) == 1, served.stderr
    assert lines[0].startswith("storefront: configuration error: SECRET_KEY")
    assert not port_is_open(served.port)


async def test_serve_gives_up_on_a_worker_that_cannot_start(tmp_path):
    broken_app = tmp_path / "broken_app.py"
    broken_app.write_text('raise RuntimeError("this app cannot be imported")\n')
    served = await start_serve(tmp_path, toml_extra=f'application_path = "{broken_app}:app"\n')
    assert await served.wait() == 1
    assert served.stderr.count('started"}') == 4
    assert "this app cannot be imported" in served.stderr
    last_line = served.stderr.strip().splitlines()[-1]
    assert last_line.startswith("storefront: serve: 4 workers in a row ended within 10 s")
    assert last_line.endswith("giving up")
    assert not port_is_open(served.port)


def test_a_worker_whose_supervisor_is_gone_stops_the_workers():
    shutdown_event = threading.Event()
    not_my_parent = os.getpid()
    stop_when_orphaned(not_my_parent, shutdown_event)
    assert shutdown_event.is_set()


async def test_serve_with_a_missing_config_file_says_so_in_one_line(tmp_path):
    process = await asyncio.create_subprocess_exec(
        str(STOREFRONT),
        "serve",
        "--config",
        str(tmp_path / "missing.toml"),
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "SECRET_KEY": SECRET_KEY},
        cwd=tmp_path,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), STARTUP_SECONDS)
    assert process.returncode == 2
    assert stderr.decode().startswith("storefront: error: cannot read ")
    assert len(stderr.decode().strip().splitlines()) == 1
