#!/bin/sh
# The container's command: check the configuration, migrate (the release step; workers never
# migrate), then serve with `storefront serve`, which reads hypercorn.toml and starts a new
# worker when one dies (hypercorn's own master would stop the whole shop).
set -eu
cd "$(dirname "$0")/.."
# An unsafe configuration stops here with a one-line message, before anything is migrated.
python -c "import run"
storefront db upgrade
exec storefront serve --config hypercorn.toml
