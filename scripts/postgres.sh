#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests.
#
#   scripts/postgres.sh start [ENV_FILE]   start a server in a new temp dir on a free local port;
#                                          print VEIL_TEST_POSTGRES_URL=... and VEIL_TEST_POSTGRES_DIR=...
#                                          (and write both lines to ENV_FILE when given)
#   scripts/postgres.sh ENV_FILE           the same as `start ENV_FILE`
#   scripts/postgres.sh stop DIR           stop the server of DIR and delete DIR
#
# The server listens on 127.0.0.1 only, trusts local connections (it holds test data only), and
# runs as a non-root user: initdb and postgres refuse root, so as root it runs as `postgres`
# (created if missing). PostgreSQL's binaries are looked up in PATH, then under
# /usr/lib/postgresql/*/bin; if none are found and we are root, `apt-get install postgresql`.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bindir() {
    local d
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

ensure_bindir() {
    local d
    if d=$(find_bindir); then echo "$d"; return 0; fi
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed (need initdb and pg_ctl)"
    echo "postgres.sh: installing PostgreSQL with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    find_bindir || die "PostgreSQL binaries still not found after apt-get install"
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Run a command as the server's user: ourselves, or `postgres` when we are root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

start() {
    local env_file="${1:-}" bindir dir port url
    bindir=$(ensure_bindir)
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/veil-pg.XXXXXX")
    chmod 755 "$dir"
    mkdir "$dir/data" "$dir/run"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/data" "$dir/run"; fi
    as_owner "$bindir/initdb" -D "$dir/data" -U veil --auth=trust --encoding=UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    local tries=0
    while :; do
        port=$(free_port)
        if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/run/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir/run -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50" \
            start >"$dir/pg_ctl.log" 2>&1; then
            break
        fi
        tries=$((tries + 1))
        [ "$tries" -lt 3 ] || { cat "$dir/run/server.log" >&2 || true; die "the server did not start"; }
    done
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U veil veil_test 2>/dev/null \
        || as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U veil veil_test
    url="postgresql://veil@127.0.0.1:$port/veil_test"
    echo "VEIL_TEST_POSTGRES_URL=$url"
    echo "VEIL_TEST_POSTGRES_DIR=$dir"
    if [ -n "$env_file" ]; then
        printf 'VEIL_TEST_POSTGRES_URL=%s\nVEIL_TEST_POSTGRES_DIR=%s\n' "$url" "$dir" >"$env_file"
    fi
}

stop() {
    local dir="${1:-}" bindir
    [ -n "$dir" ] || die "usage: postgres.sh stop DIR"
    [ -d "$dir/data" ] || die "$dir is not a server directory made by postgres.sh"
    bindir=$(find_bindir) || die "PostgreSQL is not installed"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-start}" in
    start) shift || true; start "${1:-}" ;;
    stop) shift; stop "${1:-}" ;;
    -h|--help) sed -n '2,13p' "$0" ;;
    *) start "$1" ;;
esac
