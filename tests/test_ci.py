"""CI's promise: with REQUIRE_PG=1 the PostgreSQL cases fail rather than skip when the server
is missing; without it they skip and say why."""

import asyncio
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE_TEST = """
import pytest


@pytest.mark.both_databases
async def test_probe(database_url):
    assert database_url
"""


async def _pytest_with_unreachable_postgres(tmp_path: Path, require_pg: bool) -> tuple[int, str]:
    (tmp_path / "test_probe.py").write_text(PROBE_TEST)
    env = {name: value for name, value in os.environ.items() if name != "REQUIRE_PG"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TEST_DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"
    if require_pg:
        env["REQUIRE_PG"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(REPO_ROOT / "pyproject.toml"),
        "--rootdir",
        str(tmp_path),
        "-p",
        "tests.conftest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        str(tmp_path / "test_probe.py"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_postgres_cases_fail_under_require_pg(tmp_path):
    returncode, output = await _pytest_with_unreachable_postgres(tmp_path, require_pg=True)
    assert returncode == 1, output
    assert "1 passed, 1 error" in output
    assert "REQUIRE_PG=1" in output


async def test_postgres_cases_skip_with_a_reason_otherwise(tmp_path):
    returncode, output = await _pytest_with_unreachable_postgres(tmp_path, require_pg=False)
    assert returncode == 0, output
    assert "1 passed, 1 skipped" in output
    assert "PostgreSQL not reachable" in output


def test_ci_script_requires_postgres_and_runs_make_test():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script
    assert "export REQUIRE_PG=1" in script
    assert "export TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres" in (
        script
    )
    assert script.rstrip().endswith("make test")


def test_ci_runs_make_lint_with_the_import_rules_before_the_tests():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "\nmake lint\nmake test" in script
    makefile = (REPO_ROOT / "Makefile").read_text()
    lint_recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in lint_recipe
