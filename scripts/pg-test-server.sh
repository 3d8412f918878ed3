# Sourced by scripts/test.sh: a private PostgreSQL cluster in a temp dir for the test run, on a free port.
pg_test_start() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "PostgreSQL binaries not found: scripts/setup.sh --test installs them" >&2; return 1; }
  PG_TEST_DIR=$(mktemp -d /tmp/cs-pg.XXXXXX)
  chmod 755 "$PG_TEST_DIR"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local run="" 
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_TEST_DIR"; run="runuser -u postgres --"; fi
  $run "$bin/initdb" -D "$PG_TEST_DIR/data" -U cs -A trust >/dev/null
  $run "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -o "-p $port -k $PG_TEST_DIR -c listen_addresses=127.0.0.1 -c fsync=off" \
      -l "$PG_TEST_DIR/log" -w start >/dev/null
  $run "$bin/createdb" -h 127.0.0.1 -p "$port" -U cs contact_test
  export CONTACT_SERVER_TEST_PG_URL="postgresql+psycopg://cs@127.0.0.1:$port/contact_test"
  PG_TEST_BIN=$bin; PG_TEST_RUN=$run
  echo "test PostgreSQL on 127.0.0.1:$port"
}
pg_test_stop() {
  [ -n "${PG_TEST_DIR:-}" ] || return 0
  $PG_TEST_RUN "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_TEST_DIR"
}
