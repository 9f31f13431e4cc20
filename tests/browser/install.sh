#!/usr/bin/env bash
# The browser the `browser` tests drive: Debian's chromium and its chromedriver (Selenium's own driver
# download is not reachable from CI), installed when absent. Needs root (CI machines run as root).
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromedriver --version
