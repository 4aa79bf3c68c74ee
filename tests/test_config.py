"""Configuration: the old shop's names still work, and production refuses an unsafe key."""

import asyncio
import logging
import os
import re
import secrets
import sys
from pathlib import Path

import pytest
from hypercorn.config import Config as HypercornConfig

from storefront import config as config_module
from storefront.config import ConfigError, environment_names, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = secrets.token_hex(32)
ENV_NAMES_READ = {
    "SECRET_KEY",
    "FLASK_SECRET_KEY",
    "STOREFRONT_ENV",
    "FLASK_ENV",
    "DATABASE_URL",
    "PAYSTACK_PUBLIC_KEY",
    "PAYSTACK_SECRET_KEY",
    "PAYSTACK_ENABLED",
}


@pytest.fixture(name="clean_env")
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No settings from the shell or a developer's .env leak into these tests."""
    monkeypatch.setattr(config_module, "load_dotenv", lambda **_kwargs: False)
    for name in ENV_NAMES_READ | environment_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "secret",
    [None, "", "changeme", "dev", "secret", "CHANGEME", "x" * 31, secrets.token_hex(15)],
)
def test_production_refuses_a_missing_or_weak_secret_key(clean_env, secret):
    clean_env.setenv("STOREFRONT_ENV", "production")
    if secret is not None:
        clean_env.setenv("SECRET_KEY", secret)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config()


def test_production_accepts_a_strong_key(clean_env):
    clean_env.setenv("STOREFRONT_ENV", "production")
    clean_env.setenv("SECRET_KEY", STRONG_KEY)
    clean_env.setenv("PUBLIC_BASE_URL", "https://shop.example.com")
    config = load_config()
    assert config["SECRET_KEY"] == STRONG_KEY
    assert config["QUART_AUTH_COOKIE_SECURE"] is True


def test_old_flask_names_are_honoured(clean_env):
    clean_env.setenv("FLASK_ENV", "production")
    clean_env.setenv("FLASK_SECRET_KEY", STRONG_KEY)
    clean_env.setenv("PUBLIC_BASE_URL", "https://shop.example.com")
    config = load_config()
    assert config["STOREFRONT_ENV"] == "production"
    assert config["SECRET_KEY"] == STRONG_KEY

    clean_env.setenv("FLASK_SECRET_KEY", "changeme")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config()


def test_storefront_names_win_over_flask_names(clean_env):
    clean_env.setenv("FLASK_ENV", "production")
    clean_env.setenv("STOREFRONT_ENV", "development")
    clean_env.setenv("FLASK_SECRET_KEY", "old-key")
    clean_env.setenv("SECRET_KEY", STRONG_KEY)
    config = load_config()
    assert config["STOREFRONT_ENV"] == "development"
    assert config["SECRET_KEY"] == STRONG_KEY


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://shop:pw@db.example:5432/shop",
            "postgresql+asyncpg://shop:pw@db.example:5432/shop",
        ),
        ("postgresql://shop@db/shop", "postgresql+asyncpg://shop@db/shop"),
        ("postgresql+asyncpg://shop@db/shop", "postgresql+asyncpg://shop@db/shop"),
        ("sqlite:///shop.db", "sqlite+aiosqlite:///shop.db"),
        ("sqlite+aiosqlite:////var/shop.db", "sqlite+aiosqlite:////var/shop.db"),
    ],
)
def test_database_urls_map_onto_async_drivers(clean_env, url, expected):
    clean_env.setenv("DATABASE_URL", url)
    assert load_config()["DATABASE_URL"] == expected
    assert config_module.database_url_from_env() == expected


def test_default_database_is_a_local_sqlite_file(clean_env):
    assert load_config()["DATABASE_URL"] == "sqlite+aiosqlite:///storefront.db"
    clean_env.setenv("DATABASE_URL", "")
    assert config_module.database_url_from_env() == "sqlite+aiosqlite:///storefront.db"


def test_production_refuses_to_build_links_from_the_host_header(clean_env):
    clean_env.setenv("STOREFRONT_ENV", "production")
    clean_env.setenv("SECRET_KEY", STRONG_KEY)
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        load_config()
    clean_env.setenv("PUBLIC_BASE_URL", "shop.example.com")
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
        load_config()


@pytest.mark.parametrize("hops", ["-1", "11", "one"])
def test_trusted_proxy_hops_must_be_a_small_count(clean_env, hops):
    clean_env.setenv("TRUSTED_PROXY_HOPS", hops)
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
        load_config()


def test_uploads_default_to_var_and_requests_may_carry_the_largest_photo(clean_env):
    config = load_config()
    assert config["UPLOAD_FOLDER"] == "var/uploads"
    assert config["UPLOAD_MAX_BYTES"] == 8 * 1024 * 1024
    assert config["MAX_CONTENT_LENGTH"] == 9 * 1024 * 1024
    clean_env.setenv("UPLOAD_MAX_BYTES", str(2 * 1024 * 1024))
    assert load_config()["MAX_CONTENT_LENGTH"] == 3 * 1024 * 1024
    assert load_config({"MAX_CONTENT_LENGTH": 1234})["MAX_CONTENT_LENGTH"] == 1234


@pytest.mark.parametrize("limit", ["0", "-5", "big"])
def test_upload_max_bytes_must_be_a_positive_count(clean_env, limit):
    clean_env.setenv("UPLOAD_MAX_BYTES", limit)
    with pytest.raises(ConfigError, match="UPLOAD_MAX_BYTES"):
        load_config()


def test_production_overrides_make_cookies_secure(clean_env):
    config = load_config(
        {
            "STOREFRONT_ENV": "production",
            "SECRET_KEY": STRONG_KEY,
            "PUBLIC_BASE_URL": "https://shop.example.com",
        }
    )
    assert config["QUART_AUTH_COOKIE_SECURE"] is True
    assert config["SESSION_COOKIE_SECURE"] is True


def test_production_paystack_needs_both_keys(clean_env):
    clean_env.setenv("STOREFRONT_ENV", "production")
    clean_env.setenv("SECRET_KEY", STRONG_KEY)
    clean_env.setenv("PAYSTACK_PUBLIC_KEY", "pk_live_x")
    with pytest.raises(ConfigError, match="PAYSTACK_SECRET_KEY"):
        load_config()


def test_development_without_a_key_generates_one_and_says_so(clean_env, caplog):
    logger = logging.getLogger("storefront.config")
    logger.addHandler(caplog.handler)  # the storefront logger does not propagate to root
    try:
        with caplog.at_level(logging.WARNING, logger="storefront.config"):
            first = load_config()
            second = load_config()
    finally:
        logger.removeHandler(caplog.handler)
    assert len(first["SECRET_KEY"]) >= 32
    assert first["SECRET_KEY"] != second["SECRET_KEY"]
    assert any("SECRET_KEY is not set" in record.getMessage() for record in caplog.records)


async def _python(
    code_or_args: list[str], env_overrides: dict[str, str], cwd: Path
) -> tuple[int, str]:
    scrubbed = ENV_NAMES_READ | environment_names()
    env = {name: value for name, value in os.environ.items() if name not in scrubbed}
    env.update(PYTHONPATH=str(REPO_ROOT), **env_overrides)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *code_or_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        _stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the process kept running instead of refusing") from None
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    "secret_env",
    [
        {},
        {"SECRET_KEY": "changeme"},
        {"SECRET_KEY": "short-but-not-default"},
        {"FLASK_SECRET_KEY": "dev"},
    ],
    ids=["missing", "known-default", "short", "flask-name-default"],
)
async def test_production_process_exits_non_zero_naming_secret_key(secret_env, tmp_path):
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    returncode, stderr = await _python(
        ["-c", "import run"],
        {"STOREFRONT_ENV": "production", "DATABASE_URL": database_url, **secret_env},
        tmp_path,
    )
    assert returncode != 0
    assert "SECRET_KEY" in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


async def test_python_run_py_refuses_before_serving(tmp_path):
    returncode, stderr = await _python(
        [str(REPO_ROOT / "run.py")],
        {"FLASK_ENV": "production", "SECRET_KEY": "x" * 31, "DATABASE_URL": "sqlite:///x.db"},
        tmp_path,
    )
    assert returncode != 0
    assert "SECRET_KEY" in stderr


async def test_development_process_starts_without_a_key_and_warns(tmp_path):
    returncode, stderr = await _python(
        ["-c", "import run; print(run.app.name)"],
        {"STOREFRONT_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}"},
        tmp_path,
    )
    assert returncode == 0, stderr
    assert "SECRET_KEY is not set" in stderr


def test_hypercorn_toml_is_what_production_needs():
    hypercorn = HypercornConfig.from_toml(REPO_ROOT / "hypercorn.toml")
    assert hypercorn.bind == ["0.0.0.0:8000"]
    assert hypercorn.workers == 2
    assert hypercorn.worker_class == "uvloop"
    assert hypercorn.graceful_timeout > load_config()["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"]
    assert hypercorn.accesslog is not None


class RecordingEnviron(dict[str, str]):
    """os.environ that remembers every name storefront.config looks up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def _record(self, name: str) -> None:
        if sys._getframe(2).f_globals.get("__name__") == "storefront.config":
            self.read.add(name)

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self._record(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> str:
        self._record(name)
        return super().__getitem__(name)


def _readme_configuration_names() -> set[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, re.M))


@pytest.mark.parametrize("env", ["development", "production"])
def test_config_reads_exactly_the_names_it_declares(clean_env, env):
    # The old Flask names, so that the new ones' fallbacks are read too.
    environ = RecordingEnviron({"FLASK_ENV": env, "FLASK_SECRET_KEY": STRONG_KEY})
    if env == "production":
        environ["PUBLIC_BASE_URL"] = "https://shop.example.com"
    clean_env.setattr(os, "environ", environ)
    load_config()
    assert environ.read == environment_names()


def test_readme_table_names_every_setting_config_reads_and_no_other():
    names = environment_names()
    assert {"SECRET_KEY", "FLASK_SECRET_KEY", "DATABASE_URL", "PAYSTACK_SECRET_KEY"} <= names
    assert {"CATALOG_CACHE_ENABLED", "CATALOG_CACHE_MAX_BYTES"} <= names
    assert _readme_configuration_names() == names


def test_env_example_names_every_setting():
    env_example = (REPO_ROOT / ".env.example").read_text()
    assert not [
        name
        for name in sorted(environment_names())
        if not re.search(rf"^#? ?{name}=", env_example, re.M)
    ], ".env.example"


async def test_container_boot_script_refuses_before_migrating(tmp_path):
    database_file = tmp_path / "shop.db"
    env = {name: value for name, value in os.environ.items() if name not in ENV_NAMES_READ}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO_ROOT),
        STOREFRONT_ENV="production",
        SECRET_KEY="changeme",
        DATABASE_URL=f"sqlite+aiosqlite:///{database_file}",
    )
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(REPO_ROOT / "scripts" / "boot.sh"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode != 0
    assert "SECRET_KEY" in stderr.decode()
    assert not database_file.exists()


def _clean_paystack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PAYSTACK_ENABLED",
        "PAYSTACK_SECRET_KEY",
        "PAYSTACK_PUBLIC_KEY",
        "STOREFRONT_ENV",
    ):
        monkeypatch.delenv(name, raising=False)


PRODUCTION = {
    "STOREFRONT_ENV": "production",
    "SECRET_KEY": "k" * 32 + "-a-long-random-secret",
    "PUBLIC_BASE_URL": "https://shop.example.com",
}


def test_production_refuses_to_start_with_half_the_paystack_keys(monkeypatch):
    _clean_paystack_env(monkeypatch)
    with pytest.raises(ConfigError, match="PAYSTACK_PUBLIC_KEY"):
        load_config({**PRODUCTION, "PAYSTACK_SECRET_KEY": "sk_live_x", "PAYSTACK_PUBLIC_KEY": ""})
    with pytest.raises(ConfigError, match="PAYSTACK_SECRET_KEY"):
        load_config({**PRODUCTION, "PAYSTACK_SECRET_KEY": "", "PAYSTACK_PUBLIC_KEY": "pk_live_x"})


def test_production_refuses_paystack_enabled_without_keys(monkeypatch):
    _clean_paystack_env(monkeypatch)
    monkeypatch.setenv("PAYSTACK_ENABLED", "true")
    with pytest.raises(ConfigError, match="Paystack is enabled but PAYSTACK_SECRET_KEY is not set"):
        load_config({**PRODUCTION, "PAYSTACK_SECRET_KEY": "", "PAYSTACK_PUBLIC_KEY": ""})


def test_keys_enable_paystack_and_no_keys_disable_it(monkeypatch):
    _clean_paystack_env(monkeypatch)
    keys = {"PAYSTACK_SECRET_KEY": "sk_live_x", "PAYSTACK_PUBLIC_KEY": "pk_live_x"}
    assert load_config({**PRODUCTION, **keys})["PAYSTACK_ENABLED"] is True
    no_keys = {"PAYSTACK_SECRET_KEY": "", "PAYSTACK_PUBLIC_KEY": ""}
    assert load_config({**PRODUCTION, **no_keys})["PAYSTACK_ENABLED"] is False
    assert load_config({"STOREFRONT_ENV": "development", **no_keys})["PAYSTACK_ENABLED"] is False
