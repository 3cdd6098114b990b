#!/usr/bin/env bash
# CI: what tests need beyond pip. The browser tests (tests/runtime/test_web_ui.py): Debian's chromium (driven by
# Playwright, which the dev extra installs; never `playwright install`) and axe-core from npm into
# .cache/web-ui (test-local, git-ignored). The upload-format test (tests/runtime/test_upload_formats.py):
# Ghostscript, so it proves EPS/PS/PDF uploads never reach it. Safe to run again: installed parts are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if ! command -v chromium >/dev/null || ! command -v npm >/dev/null || ! command -v gs >/dev/null; then
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium npm ghostscript
fi
[ -f .cache/web-ui/node_modules/axe-core/axe.min.js ] ||
    npm install --prefix .cache/web-ui --no-save --no-audit --no-fund axe-core@4.14.1
