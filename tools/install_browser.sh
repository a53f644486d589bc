#!/usr/bin/env bash
# Installs what the browser tests drive: Debian's chromium and chromium-driver (the tests check
# what MLflow's UI shows a user, with a real headless browser). Does nothing if both are there.
# Needs root and apt-get (as on CI and the project's machines); elsewhere it says what to do.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver (for the browser tests)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q chromium chromium-driver >/dev/null; }
  exit 0
fi
echo "install_browser: chromium and chromedriver are missing; install them (Debian: sudo apt-get" \
     "install chromium chromium-driver) for the browser test" >&2
exit 1
