#!/usr/bin/env bash
# CI: what the browser tests (tests/runtime/test_web_ui.py) need beyond pip: Debian's chromium (driven by
# Playwright, which the dev extra installs; never `playwright install`) and axe-core from npm into
# .cache/web-ui (test-local, git-ignored). Safe to run again: installed parts are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! command -v chromium >/dev/null || ! command -v npm >/dev/null; then
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium npm
fi
[ -f .cache/web-ui/node_modules/axe-core/axe.min.js ] ||
    npm install --prefix .cache/web-ui --no-save --no-audit --no-fund axe-core@4.14.1
