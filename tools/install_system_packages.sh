#!/bin/sh
# Installs the Debian packages the project uses, when missing and when we may.
# Called by `make setup`; safe to run again (it does nothing when all is there).
set -eu
[ "$(uname)" = Linux ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0

missing=""
need() {  # need PACKAGE: queue it when dpkg does not have it installed
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing="$missing $1"
}
need libopenblas0-pthread
# The web page's browser tests drive Debian's Chromium through its chromedriver.
need chromium
need chromium-driver
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "note: could not install:$missing (needs root). Install them with apt for full speed." >&2
    exit 0
fi
echo "installing Debian packages:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
