#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian-like machine, then runs the checks:
# Debian packages (real speech and sound tools, systemd-analyze, PostgreSQL), a virtualenv
# with sttwatch[local,test,postgres], ruff, mypy --strict, and the whole pytest suite.
# Root is needed only to install packages and set up PostgreSQL: as root it runs directly,
# otherwise through sudo, otherwise it stops and names what to install.
# The tests' PostgreSQL is STTWATCH_TEST_PG; when unset, a local server on 127.0.0.1:5432 with
# trust for user postgres and a database "test" is made sure of (installed, started, set up).
# Usage: bash scripts/test.sh [extra pytest args]    (VENV=path picks the virtualenv)
set -euo pipefail

DEBS=(espeak-ng alsa-utils sox ffmpeg systemd sshfs openssh-server)
PG_DEFAULT_URL="postgresql://postgres@127.0.0.1:5432/test"

say() { echo "test.sh: $*" >&2; }

# Run a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "root is needed to run: $*"
    say "there is no sudo: run this script as root, or do that step as root first"
    exit 1
  fi
}

# Install Debian packages, or say exactly which ones to install when we cannot.
apt_install() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    say "missing Debian packages: $*"
    say "install them as root (apt-get install $*) and run this script again"
    exit 1
  fi
  say "installing Debian packages: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Something is listening on host:port (bash's /dev/tcp: no client tools needed).
listening() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# The packages this machine lacks. $1: the venv path; $2: 1 when PostgreSQL must be local.
missing_debs() {
  local venv=$1 want_pg=$2 p
  local -a need=()
  for p in "${DEBS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ! -x "$venv/bin/python" ]; then
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    # Debian's Python makes a venv only with python3-venv (which holds ensurepip).
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
  fi
  if [ "$want_pg" = 1 ] && ! listening 127.0.0.1 5432 \
      && ! dpkg -s postgresql >/dev/null 2>&1; then
    need+=(postgresql)
  fi
  echo "${need[@]}"
}

# The venv with the project installed; pip runs only when pyproject.toml or the path changed.
ensure_venv() {
  local venv=$1 extras='.[local,test,postgres]' stamp
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv"; then
      rm -rf "$venv"
      say "python3 -m venv failed (on Debian: apt-get install python3-venv)"
      exit 1
    fi
  fi
  stamp="$(cat pyproject.toml; echo "$PWD $extras")"
  stamp="$(printf '%s' "$stamp" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$venv/.sttwatch-installed" 2>/dev/null)" = "$stamp" ] \
      && "$venv/bin/python" -c 'import sttwatch' >/dev/null 2>&1; then
    return 0
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$extras"
  echo "$stamp" >"$venv/.sttwatch-installed"
}

# Exit 0 when the URL takes a connection (the venv's psycopg does the talking).
pg_works() {
  "$1" - "$2" <<'EOF' >/dev/null 2>&1
import sys
import psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
EOF
}

# A local cluster on 127.0.0.1:$port that trusts user postgres and has database "test".
# Arguments: python, port, cluster name (Debian's pg_* tools; the first cluster is "main").
ensure_local_postgres() {
  local py=$1 port=$2 name=$3 ver hba url="postgresql://postgres@127.0.0.1:$2"
  pg_works "$py" "$url/test" && return 0
  if ! command -v pg_lsclusters >/dev/null 2>&1; then
    say "no PostgreSQL for the tests on 127.0.0.1:$port, and no Debian postgresql tools here"
    say "install postgresql, or point STTWATCH_TEST_PG at a server (a database the tests own)"
    exit 1
  fi
  ver=$(pg_lsclusters -h 2>/dev/null | awk -v n="$name" '$2 == n {print $1; exit}')
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    say "creating PostgreSQL cluster $ver/$name on port $port"
    as_root pg_createcluster "$ver" "$name" --port "$port" >/dev/null
  fi
  if ! listening 127.0.0.1 "$port"; then
    say "starting PostgreSQL cluster $ver/$name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
  fi
  hba="/etc/postgresql/$ver/$name/pg_hba.conf"
  if ! as_root grep -Eq '^host[[:space:]]+all[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    say "trusting user postgres on 127.0.0.1 in $hba"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust  # added by scripts/test.sh' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
  fi
  local tries=0
  until pg_works "$py" "$url/postgres"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 50 ]; then
      say "PostgreSQL $ver/$name does not take connections on 127.0.0.1:$port"
      say "see /var/log/postgresql/postgresql-$ver-$name.log"
      exit 1
    fi
    sleep 0.2
  done
  if ! pg_works "$py" "$url/test"; then
    say "creating database test"
    "$py" - "$url/postgres" <<'EOF'
import sys
import psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("CREATE DATABASE test")
EOF
  fi
}

main() {
  cd "$(dirname "$0")/.."
  local venv="${VENV:-.venv}" want_pg=1
  [ -z "${STTWATCH_TEST_PG:-}" ] || want_pg=0
  # shellcheck disable=SC2046  # one word per package
  apt_install $(missing_debs "$venv" "$want_pg")
  ensure_venv "$venv"
  if [ "$want_pg" = 1 ]; then
    ensure_local_postgres "$venv/bin/python" 5432 main
    export STTWATCH_TEST_PG="$PG_DEFAULT_URL"
  elif ! pg_works "$venv/bin/python" "$STTWATCH_TEST_PG"; then
    say "STTWATCH_TEST_PG is set but takes no connection"
    exit 1
  fi

  "$venv/bin/ruff" check sttwatch/ tests/ bench/
  "$venv/bin/mypy" --strict sttwatch/
  # Two workers: most tests wait on daemons, so two overlap on two cores; tests marked solo
  # still run alone (tests/conftest.py). -n 0 among the arguments runs one process.
  "$venv/bin/python" -m pytest -q -n 2 "$@"
}

# Sourcing the file (for trying one function) runs nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
