"""`storefront serve`: hypercorn workers under a supervisor that starts a new one when one dies.

hypercorn 0.18's own master stops every worker and exits 0 as soon as one of them dies (the OOM
killer's SIGKILL, a crash), and a worker that cannot import the app also ends in status 0. Here
the parent checks the configuration, binds the sockets once, runs hypercorn's own worker function
in each child on those shared sockets, and replaces a worker that dies while the others go on
serving. A worker that dies within FAILED_START_SECONDS of its start is a failed start: the next
start waits 0.5 s, then 1 s, then 2 s, and after GIVE_UP_AFTER (4) failed starts in a row the
supervisor stops the rest and exits 1, so a broken deploy ends instead of spinning. A worker
started after the last failed start that runs FAILED_START_SECONDS clears the count. SIGTERM or
SIGINT stops every worker gracefully and exits 0.
"""

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType

from hypercorn.config import Config, Sockets
from hypercorn.utils import write_pid_file

from storefront import PROJECT_ROOT, create_app
from storefront.config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = PROJECT_ROOT / "hypercorn.toml"
DEFAULT_APPLICATION = f"{PROJECT_ROOT / 'run.py'}:app"
WORKER_CLASSES = ("asyncio", "uvloop")
FAILED_START_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
GIVE_UP_AFTER = 4
# Past hypercorn's graceful_timeout, for the app's own shutdown (background tasks, database).
STOP_MARGIN_SECONDS = 5.0
ORPHAN_CHECK_SECONDS = 1.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG


class ServeSettingsError(Exception):
    """hypercorn settings the supervisor cannot use; printed as one line, exit 2."""


@dataclass
class Worker:
    process: BaseProcess
    started_at: float


def load_server_config(path: Path) -> Config:
    """hypercorn's settings from a TOML file; `application_path` defaults to run.py's app."""
    try:
        with path.open("rb") as file:
            settings = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ServeSettingsError(f"cannot read {path}: {error}") from error
    config = Config.from_mapping(settings)
    config.application_path = settings.get("application_path", DEFAULT_APPLICATION)
    if not isinstance(config.workers, int) or config.workers < 1:
        raise ServeSettingsError(f"{path}: workers must be a whole number of 1 or more")
    if config.worker_class not in WORKER_CLASSES:
        raise ServeSettingsError(f"{path}: worker_class must be one of {', '.join(WORKER_CLASSES)}")
    return config


def run_worker(
    config: Config, sockets: Sockets, shutdown_event: Event, supervisor_pid: int
) -> None:
    """One worker process: hypercorn's worker on the shared sockets until told to stop."""
    # Ctrl-C reaches the whole process group; the supervisor decides how the workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=stop_when_orphaned, args=(supervisor_pid, shutdown_event), daemon=True
    ).start()
    if config.worker_class == "uvloop":
        from hypercorn.asyncio.run import uvloop_worker

        uvloop_worker(config, sockets, shutdown_event)
    else:
        from hypercorn.asyncio.run import asyncio_worker

        asyncio_worker(config, sockets, shutdown_event)


def stop_when_orphaned(supervisor_pid: int, shutdown_event: Event) -> None:
    """Stop the workers once their supervisor is gone: killed outright, it cannot stop them."""
    while os.getppid() == supervisor_pid:
        time.sleep(ORPHAN_CHECK_SECONDS)
    shutdown_event.set()


def describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def backoff_seconds(failed_starts: int) -> float:
    """How long to wait before the next start after this many failed starts in a row."""
    if failed_starts == 0:
        return 0.0
    return min(FIRST_BACKOFF_SECONDS * 2 ** (failed_starts - 1), MAX_BACKOFF_SECONDS)


class Supervisor:
    """Keeps `config.workers` hypercorn workers running on sockets bound once, here."""

    def __init__(self, config: Config, sockets: Sockets) -> None:
        self.config = config
        self.sockets = sockets
        self.context = multiprocessing.get_context("spawn")
        self.shutdown_event = self.context.Event()
        self.workers: list[Worker] = []
        self.stop_signals: list[int] = []
        self.failed_starts = 0
        self.last_failed_start_at = 0.0

    def request_stop(self, signal_number: int, _frame: FrameType | None) -> None:
        self.stop_signals.append(signal_number)

    def run(self) -> int:
        """Serve until a stop signal (0) or until workers keep failing to start (1)."""
        next_start_at = time.monotonic()
        while not self.stop_signals:
            now = time.monotonic()
            missing = self.config.workers - len(self.workers)
            if missing and now >= next_start_at:
                for _ in range(missing):
                    self.start_worker()
                continue
            self.wait_for_exits(min(0.5, next_start_at - now) if missing else 0.5)
            self.forget_failed_starts_once_one_works()
            for worker in self.collect_exited():
                lived = time.monotonic() - worker.started_at
                how = describe_exit(worker.process.exitcode)
                if lived < FAILED_START_SECONDS:
                    self.failed_starts += 1
                    self.last_failed_start_at = time.monotonic()
                if self.failed_starts >= GIVE_UP_AFTER:
                    return self.give_up(worker, how, lived)
                delay = backoff_seconds(self.failed_starts)
                next_start_at = max(next_start_at, time.monotonic() + delay)
                log.warning(
                    "worker %d %s after %.1f s; starting another in %.1f s",
                    worker.process.pid,
                    how,
                    lived,
                    delay,
                )
        log.info("stopping %d workers (%s)", len(self.workers), self.stop_reason())
        self.stop()
        log.info("stopped")
        return EXIT_OK

    def forget_failed_starts_once_one_works(self) -> None:
        now = time.monotonic()
        if any(
            worker.started_at > self.last_failed_start_at
            and now - worker.started_at >= FAILED_START_SECONDS
            for worker in self.workers
        ):
            self.failed_starts = 0

    def give_up(self, worker: Worker, how: str, lived: float) -> int:
        message = (
            f"{self.failed_starts} workers in a row ended within {FAILED_START_SECONDS:g} s"
            f" of starting (the last {how}); giving up"
        )
        log.error("worker %d %s after %.1f s; %s", worker.process.pid, how, lived, message)
        self.stop()
        print(f"storefront: serve: {message}", file=sys.stderr, flush=True)
        return EXIT_FAILURE

    def start_worker(self) -> None:
        process = self.context.Process(
            target=run_worker,
            kwargs={
                "config": self.config,
                "sockets": self.sockets,
                "shutdown_event": self.shutdown_event,
                "supervisor_pid": os.getpid(),
            },
        )
        process.start()
        self.workers.append(Worker(process, time.monotonic()))
        log.info("worker %d started", process.pid)

    def wait_for_exits(self, timeout: float) -> None:
        # A signal does not cut this short (PEP 475), hence the short timeout.
        wait([worker.process.sentinel for worker in self.workers], timeout=timeout)

    def collect_exited(self) -> list[Worker]:
        exited = [worker for worker in self.workers if worker.process.exitcode is not None]
        for worker in exited:
            worker.process.join()
            self.workers.remove(worker)
        return exited

    def stop(self) -> None:
        """Ask every worker to finish gracefully; kill what is still running at the deadline or
        at a second stop signal."""
        self.shutdown_event.set()
        signals_seen = len(self.stop_signals)
        deadline = time.monotonic() + self.config.graceful_timeout + STOP_MARGIN_SECONDS
        while self.workers and time.monotonic() < deadline:
            if len(self.stop_signals) > max(signals_seen, 1):
                break
            self.wait_for_exits(timeout=0.5)
            self.collect_exited()
        for worker in self.workers:
            log.warning("worker %d did not stop in time; killing it", worker.process.pid)
            worker.process.kill()
            worker.process.join()
        self.workers.clear()

    def stop_reason(self) -> str:
        return ", ".join(signal.Signals(number).name for number in self.stop_signals)


def serve(config_path: Path = DEFAULT_CONFIG_PATH) -> int:
    """`storefront serve`: check the configuration, bind, supervise the workers; the exit status."""
    try:
        create_app()
    except ConfigError as error:
        print(f"storefront: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_server_config(config_path)
    except ServeSettingsError as error:
        print(f"storefront: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sockets = config.create_sockets()
    except OSError as error:
        print(f"storefront: failed: cannot bind {config.bind}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if config.pid_path is not None:
        write_pid_file(config.pid_path)
    supervisor = Supervisor(config, sockets)
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, supervisor.request_stop)
    try:
        return supervisor.run()
    finally:
        supervisor.stop()  # run() has stopped them already, unless it failed
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
            sock.close()
