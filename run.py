"""The ASGI app that `storefront serve` runs in each hypercorn worker (docs/OPERATIONS.md).

`python run.py` serves it locally on http://127.0.0.1:5000. An unsafe configuration (for example
production without a strong SECRET_KEY) stops the process with a one-line message naming the
variable, whichever way it was started.
"""

import asyncio
import signal

from storefront import create_app
from storefront.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    raise SystemExit(f"storefront: configuration error: {error}") from None


async def serve_locally(bind: str = "127.0.0.1:5000") -> None:
    """Serve with hypercorn until Ctrl-C or SIGTERM, then shut down gracefully."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [bind]
    config.accesslog = "-"
    config.graceful_timeout = 10
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, shutdown.set)
    print(f"Serving on http://{bind} (Ctrl-C stops)", flush=True)
    await serve(app, config, shutdown_trigger=shutdown.wait)


if __name__ == "__main__":
    asyncio.run(serve_locally())
