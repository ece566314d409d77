#!/bin/sh
# Installs Debian packages the project uses, when missing and when we may.
# `make setup` calls it with no arguments (the service's and the tests'
# packages); `make bench-setup` names the benchmarks' own (ffmpeg).
# Safe to run again: it does nothing when all is there.
set -eu
[ "$(uname)" = Linux ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0

if [ "$#" -eq 0 ]; then
    # OpenBLAS: ~30x faster CPU matrix multiply for mlx. Chromium and its
    # driver: the web page's browser tests. nginx: `make run` (serve.py) puts
    # it in front of gunicorn, so slow clients never hold a request thread.
    # redis-server: cluster mode (REDIS_URL); the tests start their own on a free port.
    set -- libopenblas0-pthread chromium chromium-driver nginx redis-server
fi
missing=""
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "note: could not install:$missing (needs root: apt-get install$missing)." >&2
    exit 0
fi
echo "installing Debian packages:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
# serve.py runs nginx itself, as the user who runs the service. Debian's
# package also enables and starts a system-wide nginx on port 80; when this
# script is what installed it, that service is stopped and disabled again.
case " $missing " in
    *" nginx "*)
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
            echo "note: disabled the system-wide nginx service the package started (serve.py runs its own)."
        fi
        ;;
esac
# Debian's redis-server also starts a system-wide Redis on port 6379. The tests never use it (they start their own),
# and a deployment configures its own (guides/operations.md), so one this script installed is stopped again.
case " $missing " in
    *" redis-server "*)
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
            echo "note: disabled the system-wide redis-server service the package started (the tests run their own)."
        fi
        ;;
esac
