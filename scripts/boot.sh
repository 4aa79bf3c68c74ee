#!/bin/sh
# The container's command, and what `make run` does for development: check the configuration,
# migrate (the release step; workers never migrate), then serve with hypercorn.toml.
set -eu
cd "$(dirname "$0")/.."
# hypercorn 0.18 exits 0 when a worker dies while importing the app (pgjones/hypercorn#269), so
# an unsafe configuration is refused here, where the non-zero exit still stops the container.
python -c "import run"
storefront db upgrade
exec hypercorn --config hypercorn.toml run:app
