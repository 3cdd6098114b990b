#!/usr/bin/env bash
# CI: what tests need beyond pip. The browser tests (tests/runtime/test_web_ui.py): Debian's chromium (driven by
# Playwright, which the dev extra installs; never `playwright install`) and axe-core from npm into
# .cache/web-ui (test-local, git-ignored). The upload-format test (tests/runtime/test_upload_formats.py):
# Ghostscript, so it proves EPS/PS/PDF uploads never reach it. Safe to run again: installed parts are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
# Only what is missing: machines that ship Node.js (with its own npm) refuse Debian's npm package.
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v npm >/dev/null || missing="$missing npm"
command -v gs >/dev/null || missing="$missing ghostscript"
if [ -n "$missing" ]; then
    $sudo apt-get update -qq && $sudo apt-get install -y -qq $missing
fi
[ -f .cache/web-ui/node_modules/axe-core/axe.min.js ] ||
    npm install --prefix .cache/web-ui --no-save --no-audit --no-fund axe-core@4.14.1
