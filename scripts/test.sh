#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian-like machine, then runs the checks:
# Debian packages (real speech and sound tools, systemd-analyze), a virtualenv with
# sttwatch[local,test], ruff, mypy --strict, and the whole pytest suite.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(espeak-ng alsa-utils sox ffmpeg systemd)
need=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

venv="${VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[local,test]'

"$venv/bin/ruff" check sttwatch/ tests/ bench/
"$venv/bin/mypy" --strict sttwatch/
"$venv/bin/python" -m pytest -q "$@"
