#!/usr/bin/env bash
# Regenerate migrations/versions/0001_initial_schema.py from the models.
# While the shop has not shipped, the schema lives in ONE initial revision: after changing a
# model, run this from the repository root, read the new file, and run
# `pytest tests/models/test_migrations.py` (models and migration must agree on both databases).
# Once a release is deployed, add new revisions with `alembic revision --autogenerate` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

rm -f migrations/versions/0001_initial_schema.py
# Autogenerate against an empty database: every table comes out as a create_table.
DATABASE_URL="sqlite+aiosqlite:///$scratch/empty.db" \
    "$python" -m alembic revision --autogenerate --rev-id 0001 -m "initial schema"
echo "Wrote migrations/versions/0001_initial_schema.py; read it, then run the migration test."
