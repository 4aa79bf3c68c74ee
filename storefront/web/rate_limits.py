"""Rate-limit counts every worker shares: in Redis when REDIS_URL is set (across hosts), else in a
small SQLite file on this machine (across the workers of one server).

quart-rate-limiter keeps a theoretical arrival time (TAT, GCRA) per client and route. Its own
stores read the TAT and write it back in two steps, so two workers (or two requests awaiting
one store) can both take the last slot; here the check and the count are one atomic step: a
Lua script in Redis, an IMMEDIATE transaction in SQLite.
"""

import asyncio
import hashlib
import logging
import sqlite3
import tempfile
import threading
import time
from abc import abstractmethod
from datetime import UTC, datetime
from math import ceil
from pathlib import Path
from random import random
from typing import Any

from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded
from quart_rate_limiter.store import RateLimiterStoreABC
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# How long the shop counts locally after Redis failed, before it tries Redis again.
REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5
# Check and count in one step, on Redis's clock (hosts' clocks may differ): the seconds to wait
# when the limit is reached, else nil. KEYS[1] the TAT key; ARGV: the seconds one request adds,
# the most the TAT may run ahead of now.
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local ahead = tat - now
if ahead > tonumber(ARGV[2]) then
  return tostring(ahead - tonumber(ARGV[2]))
end
local new_tat = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return false
"""


class SharedTatStore(RateLimiterStoreABC):
    """A store that can check and count a request in one atomic step."""

    @abstractmethod
    async def take(self, key: str, inverse: float, max_ahead: float) -> float | None:
        """Count one request unless its limit is reached: None, or the seconds to wait."""

    async def before_serving(self) -> None:
        pass

    async def after_serving(self) -> None:
        pass


def _take_from(tat: float | None, now: float, inverse: float, max_ahead: float) -> float:
    """GCRA: the new TAT, or minus the seconds to wait."""
    start = max(tat if tat is not None else now, now)
    if start - now > max_ahead:
        return -(start - now - max_ahead)
    return start + inverse


class SqliteTatStore(SharedTatStore):
    """TATs in a SQLite file that every worker on this machine opens (WAL; one writer at a
    time). Blocking calls run in a thread, one at a time per worker."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS tats (key TEXT PRIMARY KEY, tat REAL NOT NULL)"
            )
            self._connection = connection
        return self._connection

    def _take(self, key: str, inverse: float, max_ahead: float) -> float | None:
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                row = connection.execute("SELECT tat FROM tats WHERE key = ?", (key,)).fetchone()
                new_tat = _take_from(row[0] if row else None, now, inverse, max_ahead)
                if new_tat < 0:
                    connection.execute("COMMIT")
                    return -new_tat
                connection.execute(
                    "INSERT INTO tats (key, tat) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                    (key, new_tat),
                )
                if random() < 0.01:  # now and then, forget clients whose limits have run out
                    connection.execute("DELETE FROM tats WHERE tat < ?", (now,))
                connection.execute("COMMIT")
                return None
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def _read(self, key: str) -> float | None:
        with self._lock:
            row = self._connect().execute("SELECT tat FROM tats WHERE key = ?", (key,)).fetchone()
            return float(row[0]) if row else None

    def _write(self, key: str, tat: float) -> None:
        with self._lock:
            self._connect().execute(
                "INSERT INTO tats (key, tat) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                (key, tat),
            )

    async def take(self, key: str, inverse: float, max_ahead: float) -> float | None:
        return await asyncio.to_thread(self._take, key, inverse, max_ahead)

    async def get(self, key: str, default: datetime) -> datetime:
        tat = await asyncio.to_thread(self._read, key)
        return default if tat is None else datetime.fromtimestamp(tat, UTC)

    async def set(self, key: str, tat: datetime) -> None:
        await asyncio.to_thread(self._write, key, tat.timestamp())

    async def after_serving(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class RedisTatStore(SharedTatStore):
    """TATs in Redis, shared by every worker on every host. While Redis cannot be reached the
    shop counts in `local` (this machine's workers) and tries Redis again after a few seconds:
    limits hold per machine instead of failing open or refusing logins."""

    def __init__(self, url: str, namespace: str, local: SqliteTatStore) -> None:
        self.url = url
        self.namespace = namespace
        self.local = local
        self._redis: Redis | None = None
        self._redis_down_until = 0.0

    def _client(self) -> Redis | None:
        if time.monotonic() < self._redis_down_until:
            return None
        if self._redis is None:
            self._redis = Redis.from_url(
                self.url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
        return self._redis

    def _redis_failed(self, error: Exception) -> None:
        log.warning(
            "Redis unreachable for rate limits, counting on this machine for %s s: %s",
            REDIS_RETRY_SECONDS,
            error,
        )
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS

    async def take(self, key: str, inverse: float, max_ahead: float) -> float | None:
        redis = self._client()
        if redis is not None:
            try:
                wait = await redis.eval(TAKE_SCRIPT, 1, self.namespace + key, inverse, max_ahead)
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                return None if wait is None else float(wait)
        return await self.local.take(key, inverse, max_ahead)

    async def get(self, key: str, default: datetime) -> datetime:
        redis = self._client()
        if redis is not None:
            try:
                tat: Any = await redis.get(self.namespace + key)
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                return default if tat is None else datetime.fromtimestamp(float(tat), UTC)
        return await self.local.get(key, default)

    async def set(self, key: str, tat: datetime) -> None:
        redis = self._client()
        if redis is not None:
            try:
                await redis.set(self.namespace + key, str(tat.timestamp()))
                return
            except (RedisError, OSError) as error:
                self._redis_failed(error)
        await self.local.set(key, tat)

    async def after_serving(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        await self.local.after_serving()


class SharedRateLimiter(RateLimiter):
    """quart-rate-limiter with the check and the count made one step in a shared store.

    With several limits on one route an earlier limit counts a request that a later one then
    refuses; the shop puts one limit on each route."""

    store: SharedTatStore

    async def _raise_on_rejection(self, endpoint: str, rate_limits: list[RateLimit]) -> None:
        for rate_limit in rate_limits:
            key = await self._create_key(endpoint, rate_limit)
            max_ahead = rate_limit.period.total_seconds() - rate_limit.inverse
            wait = await self.store.take(key, rate_limit.inverse, max_ahead)
            if wait is not None:
                raise RateLimitExceeded(max(1, ceil(wait)))

    async def _update_limits(self, endpoint: str, rate_limits: list[RateLimit]) -> None:
        """Counted already, in _raise_on_rejection."""


def database_namespace(database_url: str) -> str:
    """Names this shop's limits: every worker and host on one database shares them."""
    url = make_url(database_url).render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def local_store_path(database_url: str, store_path: str) -> Path:
    """RATELIMIT_STORE_PATH; else beside a SQLite database; else in the temp directory."""
    if store_path:
        return Path(store_path)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(f"{url.database}-ratelimits")
    name = f"storefront-ratelimits-{database_namespace(database_url)}.sqlite3"
    return Path(tempfile.gettempdir()) / name


def make_rate_limit_store(database_url: str, redis_url: str, store_path: str) -> SharedTatStore:
    """Redis when REDIS_URL is set (this machine's file while Redis is down), else the file."""
    local = SqliteTatStore(local_store_path(database_url, store_path))
    if not redis_url:
        return local
    namespace = f"storefront:{database_namespace(database_url)}:"
    return RedisTatStore(redis_url, namespace, local)
