#!/usr/bin/env bash
# Sets up everything jiapei needs on a Debian machine with Python 3.11: a virtualenv in .venv with the
# project and its dependencies, and the Mosquitto broker (Debian package) when it is missing.
# Idempotent: a second run with an unchanged pyproject.toml only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${JIAPEI_VENV:-.venv}

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
if [ "${JIAPEI_BROWSER:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need_apt+=(fonts-noto-cjk)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: please install these Debian packages first: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi

stamp="$VENV/.jiapei-installed"
want=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# dlib from its prebuilt wheel (a dependency of the project), never a source build; face_recognition last and
# without its `dlib` requirement, which pip would otherwise try to build from source.
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -m pip install -q --no-deps "face_recognition==1.3.0"
echo "$want" > "$stamp"
echo "bootstrap: environment ready in $VENV"
