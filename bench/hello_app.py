"""The bare Quart baseline for bench/pages.py: one route, no session, no database."""

from quart import Quart

app = Quart(__name__)


@app.get("/")
async def hello() -> str:
    return "Hello, world!"
