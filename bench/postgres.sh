#!/usr/bin/env bash
# postgres.sh start|stop: a throwaway PostgreSQL server for the benchmark.
#
# start  installs Debian's postgresql package if pg_ctl is missing, creates a
#        fresh cluster in a new temporary directory, starts it listening on
#        127.0.0.1 only, on a free port from 54329 up (unix socket inside that
#        directory), creates the database "bench" and prints its DSN on
#        stdout. Everything else goes to stderr.
# stop   stops that server and removes its directory.
#
# The cluster keeps PostgreSQL's defaults (fsync on, synchronous_commit on,
# shared_buffers 128MB, max_connections 100, ...) except for where it
# listens: listen_addresses=127.0.0.1, port, unix_socket_directories. The
# benchmark sets synchronous_commit per session.
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# "postgres" user (which the Debian package creates) through runuser; as
# another user, it runs as that user (and installing needs root).
set -euo pipefail

STATE="${TMPDIR:-/tmp}/fractal-bench-postgres.dir"
FIRST_PORT=54329
DB=bench

log() { echo "postgres.sh: $*" >&2; }

# find_bin sets PGBIN to the directory holding pg_ctl, or returns 1.
find_bin() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/pg_ctl" ]; then
			PGBIN="$d"
			return 0
		fi
	done
	if command -v pg_ctl >/dev/null 2>&1; then
		PGBIN="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
		return 0
	fi
	return 1
}

install_postgres() {
	if [ "$(id -u)" -ne 0 ]; then
		log "pg_ctl not found, and installing the postgresql package needs root"
		exit 1
	fi
	log "installing postgresql with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	# The package's own cluster (if it makes one) is not used.
	apt-get install -y -q postgresql >&2
}

# as_owner runs a command as the server's owner.
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
	if [ -f "$STATE" ]; then
		log "a server from an earlier start is recorded in $STATE: stopping it first"
		stop
	fi
	find_bin || { install_postgres; find_bin; } || { log "pg_ctl still not found after installing"; exit 1; }
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		log "creating the postgres system user"
		useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
	fi

	local dir port
	dir="$(mktemp -d "${TMPDIR:-/tmp}/fractal-bench-pg.XXXXXX")"
	echo "$dir" >"$STATE"
	# From here on a failure removes what was made.
	trap 'log "start failed; cleaning up"; stop || true' ERR
	chmod 700 "$dir"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$dir"
	fi

	port=$FIRST_PORT
	while port_in_use "$port"; do
		port=$((port + 1))
		if [ "$port" -gt $((FIRST_PORT + 100)) ]; then
			log "no free port in $FIRST_PORT..$((FIRST_PORT + 100))"
			false
		fi
	done
	echo "$port" >"$dir/port"

	log "initdb in $dir/data ($PGBIN)"
	as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; false; }
	log "starting on 127.0.0.1:$port"
	as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" start >&2 ||
		{ cat "$dir/server.log" >&2; false; }
	as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB" >&2
	trap - ERR
	echo "postgres://postgres@127.0.0.1:$port/$DB?sslmode=disable"
}

stop() {
	if [ ! -f "$STATE" ]; then
		log "no server recorded in $STATE: nothing to stop"
		return 0
	fi
	local dir
	dir="$(cat "$STATE")"
	if [ -d "$dir/data" ] && [ -f "$dir/data/postmaster.pid" ]; then
		find_bin || true
		log "stopping the server in $dir"
		as_owner "${PGBIN:-/usr/bin}/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 || log "pg_ctl stop failed"
	fi
	case "$dir" in
	"${TMPDIR:-/tmp}"/fractal-bench-pg.*) rm -rf "$dir" ;;
	*) log "not removing unexpected directory $dir" ;;
	esac
	rm -f "$STATE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
