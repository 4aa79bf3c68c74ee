# CyberWorld Storefront: `storefront serve` (hypercorn workers per hypercorn.toml, each one
# restarted when it dies) on port 8000, after `storefront db upgrade` (scripts/boot.sh).
# Python 3.11 is what the tests run on (Quart 0.23 would need 3.13; pip picks Quart 0.22 here).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STOREFRONT_ENV=production \
    DATABASE_URL=sqlite+aiosqlite:////app/var/storefront.db \
    UPLOAD_FOLDER=/app/var/uploads

WORKDIR /app
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin storefront

# Dependencies first, so code changes do not reinstall them. Editable, like `make run`: the
# package finds templates/, static/ and migrations/ beside it in /app.
COPY pyproject.toml README.md ./
COPY storefront/ storefront/
RUN pip install -e .

COPY templates/ templates/
COPY static/ static/
COPY migrations/ migrations/
COPY alembic.ini run.py hypercorn.toml ./
COPY scripts/boot.sh scripts/boot.sh

# /app/var is the only writable path: the SQLite file (when DATABASE_URL is not PostgreSQL) and
# uploaded photos (var/uploads).
RUN mkdir -p /app/var/uploads \
    && chown storefront:storefront /app/var /app/var/uploads
USER storefront

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["sh", "scripts/boot.sh"]
