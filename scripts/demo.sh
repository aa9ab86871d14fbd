#!/usr/bin/env bash
# zeroDB demo: a MariaDB primary and a GTID replica on local ports, an agent
# beside each, zerodb-keeper, and zerodb-proxy in front. Ctrl-C stops
# everything.
#
#   scripts/demo.sh            # proxy on 127.0.0.1:3307, admin on :9307, keeper admin on :9700
#   scripts/demo.sh --ha       # keepers as a group on etcd, two proxies (below)
#
# Then, in another terminal:
#   mariadb -h127.0.0.1 -P3307 -uapp -papp-pw app
#   curl -s localhost:9307/status | python3 -m json.tool
#   kill -9 $(cat .demo/mysql_1/pid)          # the proxy switches to mysql_11
#   curl -s localhost:9700/decisions | python3 -m json.tool
#
# --ha: the same two servers and agents, a 3-member etcd cluster on
# loopback (client ports 12379, 12389, 12399; data in .demo/etcd/<n>, on
# /dev/shm when there is one), three keepers on it (store: etcd, lease_ttl
# 2s; control :7700-7702, admin :9700-9702; pids in .demo/keeper-<n>.pid,
# logs in .demo/keeper-<n>.log) and two proxies (3307 with admin :9307,
# 3308 with admin :9308; logs in .demo/proxy-<port>.log). Agents and
# proxies know all three keepers and follow the one that leads:
#   curl -s localhost:970{0,1,2}/leader       # 200 (and a body) on the leader only
#   kill -9 $(cat .demo/keeper-<n>.pid)       # the leader's: another leads within seconds
#   kill -9 $(cat .demo/mysql_1/pid)          # both proxies switch to mysql_11
# A .demo/ of one mode is not reused by the other (the servers' roles, the
# agents' terms and the keepers' state belong to it): rm -rf .demo to switch.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ha=0
case "${1:-}" in
  "") ;;
  --ha) ha=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: scripts/demo.sh [--ha]" >&2
    exit 2
    ;;
esac
demo=$root/.demo
mode=$([ "$ha" = 1 ] && echo ha || echo single)
if [ -f "$demo/mode" ]; then
  previous=$(cat "$demo/mode")
elif [ -d "$demo/mysql_1" ]; then
  previous=single
else
  previous=$mode
fi
if [ "$previous" != "$mode" ]; then
  echo "$demo holds a demo run $([ "$previous" = ha ] && echo "with --ha" || echo "without --ha"):" \
    "its servers' roles, agents' terms and keepers' state belong to it. rm -rf .demo to start over." >&2
  exit 1
fi
scripts/deps.sh
cargo build --release --locked -p zerodb-proxy -p zerodb-keeper -p zerodb-agent
mkdir -p "$demo"
echo "$mode" >"$demo/mode"
PRIMARY_PORT=${PRIMARY_PORT:-13306}
REPLICA_PORT=${REPLICA_PORT:-13316}
PROXY_PORT=${PROXY_PORT:-3307}
ADMIN_PORT=${ADMIN_PORT:-9307}
KEEPER_PORT=${KEEPER_PORT:-7700}
KEEPER_ADMIN_PORT=${KEEPER_ADMIN_PORT:-9700}
TOKEN=${TOKEN:-demo-token}
# --ha: the second proxy, and etcd member n's client port (its peer port is
# the next one).
PROXY2_PORT=${PROXY2_PORT:-3308}
ADMIN2_PORT=${ADMIN2_PORT:-9308}
ETCD_PORT=${ETCD_PORT:-12379}
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

# --ha: etcd member n (0-2), client port ETCD_PORT+10n, peer port +1.
etcd_client() { echo "127.0.0.1:$((ETCD_PORT + 10 * $1))"; }
etcd_peer() { echo "127.0.0.1:$((ETCD_PORT + 10 * $1 + 1))"; }
start_etcd() {
  # Data on tmpfs when there is one, as in the tests: a disk stall (a
  # build) could otherwise delay etcd's fsyncs past its 500 ms election
  # timeout. .demo/etcd links to it, and goes with .demo.
  if [ ! -e "$demo/etcd" ] && [ ! -L "$demo/etcd" ]; then
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then
      local shm
      shm=/dev/shm/zerodb-demo-$(id -u)-$(printf %s "$root" | cksum | cut -d' ' -f1)
      rm -rf "$shm"
      mkdir -p "$shm"
      ln -s "$shm" "$demo/etcd"
    else
      mkdir -p "$demo/etcd"
    fi
  fi
  # /dev/shm emptied by a reboot: etcd starts empty, and the keepers learn
  # the topology again from the agents' reports.
  [ -L "$demo/etcd" ] && mkdir -p "$(readlink "$demo/etcd")"
  local cluster="" endpoints="" n
  for n in 0 1 2; do
    cluster+="${cluster:+,}etcd$n=http://$(etcd_peer $n)"
    endpoints+="${endpoints:+,}$(etcd_client $n)"
  done
  for n in 0 1 2; do
    # --pre-vote: a member coming back does not depose a healthy leader.
    etcd --name "etcd$n" --data-dir "$demo/etcd/$n" \
      --listen-client-urls "http://$(etcd_client $n)" --advertise-client-urls "http://$(etcd_client $n)" \
      --listen-peer-urls "http://$(etcd_peer $n)" --initial-advertise-peer-urls "http://$(etcd_peer $n)" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token zerodb-demo \
      --election-timeout 500 --heartbeat-interval 100 --pre-vote=true \
      --logger zap --log-outputs stderr </dev/null >/dev/null 2>>"$demo/etcd-$n.log" &
    pids+=($!)
    echo $! >"$demo/etcd-$n.pid"
  done
  for _ in $(seq 300); do
    ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --dial-timeout=1s --command-timeout=2s \
      endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd did not become healthy; see $demo/etcd-{0,1,2}.log" >&2
  exit 1
}

start_db mysql_1 "$PRIMARY_PORT" 1
start_db mysql_11 "$REPLICA_PORT" 11
sql mysql_1 "CREATE USER IF NOT EXISTS zerodb@'%' IDENTIFIED BY 'zerodb-pw'; GRANT ALL ON *.* TO zerodb@'%';
  CREATE USER IF NOT EXISTS repl@'%' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO repl@'%';
  CREATE DATABASE IF NOT EXISTS app;"
if [ "$(sql mysql_11 "SELECT COUNT(*) FROM information_schema.SLAVE_STATUS" 2>/dev/null || echo 0)" = 0 ]; then
  sql mysql_11 "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$PRIMARY_PORT, MASTER_USER='repl',
    MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE;" || true
fi

keeper_yaml() { # file control admin state_dir [extra top-level keys]
  cat >"$1" <<YAML
listen: $2
admin: $3
token: $TOKEN
state_dir: $4
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
${5:-}
YAML
}
if [ "$ha" = 1 ]; then
  etcd_endpoints=$(printf '"%s", ' "$(etcd_client 0)" "$(etcd_client 1)" "$(etcd_client 2)")
  keepers=()
  for n in 0 1 2; do
    keeper_yaml "$demo/keeper-$n.yaml" "127.0.0.1:$((KEEPER_PORT + n))" "127.0.0.1:$((KEEPER_ADMIN_PORT + n))" \
      "$demo/keeper-$n-state" "store: etcd
etcd: {endpoints: [${etcd_endpoints%, }], prefix: /zerodb/demo, lease_ttl: 2s}"
    keepers+=("\"127.0.0.1:$((KEEPER_PORT + n))\"")
  done
  keeper_list="[$(
    IFS=,
    echo "${keepers[*]}"
  )]"
  keeper_list=${keeper_list//,/, }
else
  keeper_yaml "$demo/keeper.yaml" "127.0.0.1:$KEEPER_PORT" "127.0.0.1:$KEEPER_ADMIN_PORT" "$demo/keeper-state"
  keeper_list=127.0.0.1:$KEEPER_PORT
fi
agent_yaml() { # name port control admin
  cat >"$demo/agent-$1.yaml" <<YAML
listen: 127.0.0.1:$3
admin: 127.0.0.1:$4
token: $TOKEN
keeper: $keeper_list
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

proxy_yaml() { # file name port admin
  cat >"$1" <<YAML
name: $2
listen: 127.0.0.1:$3
admin: 127.0.0.1:$4
keeper: $keeper_list
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
}

if [ "$ha" = 0 ]; then
  proxy_yaml "$demo/proxy.yaml" demo-proxy "$PROXY_PORT" "$ADMIN_PORT"
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
  exit
fi

# --ha
start_etcd
for n in 0 1 2; do
  target/release/zerodb-keeper --config "$demo/keeper-$n.yaml" 2>>"$demo/keeper-$n.log" &
  pids+=($!)
  echo $! >"$demo/keeper-$n.pid"
done
target/release/zerodb-agent --config "$demo/agent-mysql_1.yaml" 2>>"$demo/agent-mysql_1.log" &
pids+=($!)
target/release/zerodb-agent --config "$demo/agent-mysql_11.yaml" 2>>"$demo/agent-mysql_11.log" &
pids+=($!)
proxies=()
for p in "$PROXY_PORT:$ADMIN_PORT:1" "$PROXY2_PORT:$ADMIN2_PORT:2"; do
  IFS=: read -r port admin i <<<"$p"
  proxy_yaml "$demo/proxy-$port.yaml" "demo-proxy-$i" "$port" "$admin"
  target/release/zerodb-proxy --config "$demo/proxy-$port.yaml" >>"$demo/proxy-$port.log" 2>&1 &
  pids+=($!)
  proxies+=($!)
done

# Startup ends once one keeper leads and both proxies are registered with it.
leader=""
for _ in $(seq 300); do
  leader=""
  for n in 0 1 2; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "localhost:$((KEEPER_ADMIN_PORT + n))/leader" || true)
    [ "$code" = 200 ] && leader=$n
  done
  if [ -n "$leader" ] && [ "$(curl -s "localhost:$((KEEPER_ADMIN_PORT + leader))/status" |
    python3 -c 'import json,sys; print(sum(p.get("connected") is True for p in json.load(sys.stdin).get("proxies", [])))' \
      2>/dev/null)" = 2 ]; then
    break
  fi
  leader=""
  sleep 0.1
done
if [ -z "$leader" ]; then
  echo "no keeper leads with both proxies registered after 30 s; see $demo/keeper-{0,1,2}.log" >&2
  exit 1
fi
ladmin=$((KEEPER_ADMIN_PORT + leader))
cat <<MSG

zeroDB demo (--ha) is up.
  primary  mysql_1   127.0.0.1:$PRIMARY_PORT   (socket $demo/mysql_1/sock)
  replica  mysql_11  127.0.0.1:$REPLICA_PORT   (replicates mysql_1: GTID, semi-synchronous)
  etcd     $(etcd_client 0) $(etcd_client 1) $(etcd_client 2)   (data $demo/etcd/<n>, log $demo/etcd-<n>.log)
  keepers  control 127.0.0.1:$KEEPER_PORT-$((KEEPER_PORT + 2)), admin http://127.0.0.1:$KEEPER_ADMIN_PORT-$((KEEPER_ADMIN_PORT + 2))/{health,leader,status,decisions,metrics}
           pid $demo/keeper-<n>.pid, log $demo/keeper-<n>.log (n = 0, 1, 2; token $TOKEN)
  leading  keeper-$leader: admin :$ladmin, pid $(cat "$demo/keeper-$leader.pid")
  proxies  127.0.0.1:$PROXY_PORT (admin :$ADMIN_PORT), 127.0.0.1:$PROXY2_PORT (admin :$ADMIN2_PORT)   user app / app-pw, schema app
           log $demo/proxy-<port>.log
  agents   http://127.0.0.1:9801/status  http://127.0.0.1:9811/status

Try, in another terminal:
  curl -s localhost:970{0,1,2}/leader; echo      # 200 and a body on the leader only
  curl -s localhost:970{0,1,2}/health            # leader / follower
  curl -s localhost:$ladmin/status | python3 -m json.tool    # leadership, term, proxies
  kill -9 \$(cat $demo/keeper-$leader.pid)   # the leading keeper: another leads within ~2 s (lease_ttl),
                                         # proxies and agents follow it
  kill -9 \$(cat $demo/mysql_1/pid)     # unplanned failover: both proxies switch to mysql_11
  curl -s localhost:970{0,1,2}/decisions
  curl -s localhost:9307/status localhost:9308/status
  kill -9 \$(cat $demo/etcd-0.pid)      # etcd loses a member, keeps its majority
  ETCDCTL_API=3 etcdctl --endpoints=$(etcd_client 0),$(etcd_client 1),$(etcd_client 2) endpoint status -w table

  mariadb -h127.0.0.1 -P$PROXY_PORT -uapp -papp-pw app
  mariadb -h127.0.0.1 -P$PROXY2_PORT -uapp -papp-pw app

Ctrl-C stops everything (data stays in .demo/; a killed process is not restarted).
MSG
wait "${proxies[@]}"
