#!/usr/bin/env bash
# Install what the tests need, then run every test: lint, unit, kernel tests in throwaway
# network namespaces, Firecracker API contract tests, and booted-guest end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
