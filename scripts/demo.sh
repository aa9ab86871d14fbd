#!/usr/bin/env bash
# zeroDB demo: a MariaDB primary and a GTID replica on local ports, an agent
# beside each, zerodb-keeper, and zerodb-proxy in front. Ctrl-C stops
# everything.
#
#   scripts/demo.sh            # proxy on 127.0.0.1:3307, admin on :9307, keeper admin on :9700
#
# Then, in another terminal:
#   mariadb -h127.0.0.1 -P3307 -uapp -papp-pw app
#   curl -s localhost:9307/status | python3 -m json.tool
#   kill -9 $(cat .demo/mysql_1/pid)          # the proxy switches to mysql_11
#   curl -s localhost:9700/decisions | python3 -m json.tool
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh
cargo build --release --locked -p zerodb-proxy -p zerodb-keeper -p zerodb-agent
demo=$root/.demo
PRIMARY_PORT=${PRIMARY_PORT:-13306}
REPLICA_PORT=${REPLICA_PORT:-13316}
PROXY_PORT=${PROXY_PORT:-3307}
ADMIN_PORT=${ADMIN_PORT:-9307}
KEEPER_PORT=${KEEPER_PORT:-7700}
KEEPER_ADMIN_PORT=${KEEPER_ADMIN_PORT:-9700}
TOKEN=${TOKEN:-demo-token}
# Semi-synchronous replication: a write is acknowledged only once the
# replica has it. With two servers, once one has failed the other has no
# replica left, and waits this long before acknowledging asynchronously.
SEMI_SYNC_TIMEOUT_MS=${SEMI_SYNC_TIMEOUT_MS:-1000}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start_db() { # name port server_id
  local dir=$demo/$1
  if [ ! -d "$dir/data" ]; then
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=socket \
      --skip-test-db --user="$(id -un)" >"$dir/install.log" 2>&1
  fi
  /usr/sbin/mariadbd --no-defaults --datadir="$dir/data" --port="$2" --socket="$dir/sock" \
    --pid-file="$dir/pid" --server-id="$3" --bind-address=127.0.0.1 --user="$(id -un)" \
    --log-bin=mysql-bin --log-slave-updates --binlog-format=ROW --gtid-strict-mode=1 \
    --skip-name-resolve --max-allowed-packet=256M --innodb-buffer-pool-size=128M \
    --rpl-semi-sync-master-enabled="$([ "$3" = 1 ] && echo ON || echo OFF)" --rpl-semi-sync-slave-enabled=ON \
    --rpl-semi-sync-master-wait-point=AFTER_SYNC --rpl-semi-sync-master-timeout="$SEMI_SYNC_TIMEOUT_MS" \
    --sync-binlog=1 --innodb-flush-log-at-trx-commit=1 --init-rpl-role=SLAVE \
    --rpl-semi-sync-slave-kill-conn-timeout=1 \
    >"$dir/mysqld.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    mariadb --no-defaults -uroot --socket="$dir/sock" -e 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "mariadbd $1 did not start; see $dir/mysqld.log" >&2
  exit 1
}
sql() { mariadb --no-defaults -uroot --socket="$demo/$1/sock" -N -B -e "$2"; }

start_db mysql_1 "$PRIMARY_PORT" 1
start_db mysql_11 "$REPLICA_PORT" 11
sql mysql_1 "CREATE USER IF NOT EXISTS zerodb@'%' IDENTIFIED BY 'zerodb-pw'; GRANT ALL ON *.* TO zerodb@'%';
  CREATE USER IF NOT EXISTS repl@'%' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO repl@'%';
  CREATE DATABASE IF NOT EXISTS app;"
if [ "$(sql mysql_11 "SELECT COUNT(*) FROM information_schema.SLAVE_STATUS" 2>/dev/null || echo 0)" = 0 ]; then
  sql mysql_11 "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$PRIMARY_PORT, MASTER_USER='repl',
    MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE;" || true
fi

cat >"$demo/keeper.yaml" <<YAML
listen: 127.0.0.1:$KEEPER_PORT
admin: 127.0.0.1:$KEEPER_ADMIN_PORT
token: $TOKEN
state_dir: $demo/keeper-state
session_timeout: 2s
cooldown: 10s
datahosts:
  - name: dh1
    user: zerodb
    password: zerodb-pw
    replication_user: repl
    replication_password: repl
    datasources:
      - {name: mysql_1, addr: "127.0.0.1:$PRIMARY_PORT", agent: "127.0.0.1:7801"}
      - {name: mysql_11, addr: "127.0.0.1:$REPLICA_PORT", agent: "127.0.0.1:7811"}
YAML
agent_yaml() { # name port control admin
  cat >"$demo/agent-$1.yaml" <<YAML
listen: 127.0.0.1:$3
admin: 127.0.0.1:$4
token: $TOKEN
keeper: 127.0.0.1:$KEEPER_PORT
state_dir: $demo/agent-$1-state
datasource: {name: $1, addr: "127.0.0.1:$2", user: zerodb, password: zerodb-pw}
# Every server of the demo shares this machine: its load average says how
# busy the machine is (a build, a browser), not this server. The keeper's
# safe_load check judges a target by the client statements it runs instead.
load_measure: threads_running
YAML
}
agent_yaml mysql_1 "$PRIMARY_PORT" 7801 9801
agent_yaml mysql_11 "$REPLICA_PORT" 7811 9811

cat >"$demo/proxy.yaml" <<YAML
name: demo-proxy
listen: 127.0.0.1:$PROXY_PORT
admin: 127.0.0.1:$ADMIN_PORT
keeper: 127.0.0.1:$KEEPER_PORT
token: $TOKEN
users:
  - {name: app, password: app-pw}
datahosts:
  - name: dh1
    schemas: [app]
    user: zerodb
    password: zerodb-pw
    datasources:
      - {name: mysql_1, addr: "127.0.0.1:$PRIMARY_PORT"}
      - {name: mysql_11, addr: "127.0.0.1:$REPLICA_PORT"}
health: {interval: 200ms, timeout: 300ms, fall: 3}
YAML

cat <<MSG

zeroDB demo is up.
  primary  mysql_1   127.0.0.1:$PRIMARY_PORT   (socket $demo/mysql_1/sock)
  replica  mysql_11  127.0.0.1:$REPLICA_PORT   (replicates mysql_1: GTID, semi-synchronous)
  proxy              127.0.0.1:$PROXY_PORT     user app / app-pw, schema app
  admin              http://127.0.0.1:$ADMIN_PORT/{health,status,sessions,metrics}
  keeper             http://127.0.0.1:$KEEPER_ADMIN_PORT/{status,decisions,metrics}  (token $TOKEN)
  agents             http://127.0.0.1:9801/status  http://127.0.0.1:9811/status

  kill -9 \$(cat $demo/mysql_1/pid)   # unplanned failover to mysql_11
  curl -s -XPOST localhost:$KEEPER_ADMIN_PORT/switchover -H 'authorization: Bearer $TOKEN' \\
       -H 'content-type: application/json' -d '{"datahost":"dh1"}'   # planned switchover

  mariadb -h127.0.0.1 -P$PROXY_PORT -uapp -papp-pw app

Ctrl-C stops everything (data stays in .demo/).
MSG
target/release/zerodb-keeper --config "$demo/keeper.yaml" 2>"$demo/keeper.log" &
pids+=($!)
target/release/zerodb-agent --config "$demo/agent-mysql_1.yaml" 2>"$demo/agent-mysql_1.log" &
pids+=($!)
target/release/zerodb-agent --config "$demo/agent-mysql_11.yaml" 2>"$demo/agent-mysql_11.log" &
pids+=($!)
target/release/zerodb-proxy --config "$demo/proxy.yaml" &
pids+=($!)
wait "${pids[-1]}"
