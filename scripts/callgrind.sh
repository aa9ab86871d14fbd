#!/usr/bin/env bash
# Instructions and simulated L1 misses per query, zerodb-proxy against
# HAProxy, under the same sysbench load: the deterministic counterpart of
# benches/proxy_vs_haproxy.rs, whose throughput moves ±10–25 % between runs
# on a small machine. Each proxy runs under valgrind's callgrind with a
# cache simulation; the counts cover the measured seconds only (after a
# warm-up) and the two busiest threads (the session threads, HAProxy's
# nbthread=2 threads), divided by the queries sysbench reports.
#
#   scripts/callgrind.sh [WORKLOAD] [THREADS] [SECONDS]
#   scripts/callgrind.sh oltp_point_select 64 20     # the defaults
#
# Everything lives under target/callgrind (the raw callgrind files too, for
# callgrind_annotate). Ports: CG_DB_PORT, CG_PROXY_PORT, CG_HAPROXY_PORT.
# CG_PROXY_BIN measures another zerodb-proxy binary (say, one built from an
# older commit, to compare); CG_SKIP_HAPROXY=1 measures zerodb-proxy only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
WORKLOAD=${1:-oltp_point_select}
THREADS=${2:-64}
SECONDS_RUN=${3:-20}
DB_PORT=${CG_DB_PORT:-23400}
PROXY_PORT=${CG_PROXY_PORT:-23402}
ADMIN_PORT=$((PROXY_PORT + 1))
HAPROXY_PORT=${CG_HAPROXY_PORT:-23401}

WITH_HAPROXY=1 scripts/deps.sh
if ! command -v valgrind >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
fi
proxy_bin=${CG_PROXY_BIN:-$root/target/release/zerodb-proxy}
[ -n "${CG_PROXY_BIN:-}" ] || cargo build --release --locked -p zerodb-proxy
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)

dir=$root/target/callgrind
rm -rf "$dir"
mkdir -p "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=socket \
  --skip-test-db --user=root >"$dir/install.log" 2>&1
mariadbd --no-defaults --datadir="$dir/data" --port="$DB_PORT" --socket="$dir/sock" \
  --bind-address=127.0.0.1 --user=root --max-connections=2000 --skip-log-error \
  >/dev/null 2>"$dir/mariadbd.err" &
pids+=($!)
sql() { mariadb --no-defaults -S "$dir/sock" -uroot -e "$1"; }
for _ in $(seq 300); do sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
sql "CREATE DATABASE app;
  CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; GRANT ALL ON app.* TO 'app'@'%';
  CREATE USER 'zerodb'@'%' IDENTIFIED BY 'zerodb-pw'; GRANT ALL ON *.* TO 'zerodb'@'%';"

sb() { # port seconds [run|prepare] -> queries per second
  sysbench "$WORKLOAD" --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user=app \
    --mysql-password=app-pw --mysql-db=app --tables=4 --table-size=10000 \
    --db-ps-mode=auto --threads="$THREADS" --time="$2" "${3:-run}" 2>&1 |
    awk '/queries:/ { gsub(/\(/, "", $3); print $3; exit }'
}
sb "$DB_PORT" 0 prepare >/dev/null

cat >"$dir/proxy.yaml" <<EOF
listen: 127.0.0.1:$PROXY_PORT
admin: 127.0.0.1:$ADMIN_PORT
users:
  - {name: app, password: app-pw}
datahosts:
  - name: dh1
    schemas: [app]
    user: zerodb
    password: zerodb-pw
    datasources:
      - {name: m1, addr: "127.0.0.1:$DB_PORT"}
pool: {min_idle: 8}
EOF
cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend mysql
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend db
backend db
  server m1 127.0.0.1:$DB_PORT
EOF

measure() { # name port command...
  local name=$1 port=$2
  shift 2
  mkdir -p "$dir/$name"
  RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes --cache-sim=yes \
    --D1=49152,12,64 --LL=2097152,16,64 --instr-atstart=no \
    --callgrind-out-file="$dir/$name/callgrind.out" "$@" >"$dir/$name.log" 2>&1 &
  local vg=$!
  pids+=("$vg")
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  sb "$port" 5 >/dev/null # warm-up: connections, prepared statements, buffers
  callgrind_control -i on "$vg" >/dev/null 2>&1
  local qps
  qps=$(sb "$port" "$SECONDS_RUN")
  callgrind_control -i off "$vg" >/dev/null 2>&1
  callgrind_control -d "$vg" >/dev/null 2>&1
  kill -TERM "$vg"
  wait "$vg" || true
  python3 - "$dir/$name" "$qps" "$SECONDS_RUN" "$name" <<'EOF'
import glob, sys
d, qps, secs, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
threads = []
for f in glob.glob(d + "/callgrind.out*"):
    events = None
    for line in open(f, errors="replace"):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:") and events:
            threads.append(dict(zip(events, map(int, line.split()[1:]))))
threads.sort(key=lambda t: -t.get("Ir", 0))
queries = qps * secs
busy = threads[:2]
per = {e: sum(t.get(e, 0) for t in busy) / queries for e in ("Ir", "D1mr", "D1mw", "DLmr")}
print(f"| {name} | {queries:.0f} | {per['Ir']:.0f} | {per['D1mr']:.1f} | {per['D1mw']:.1f} | {per['DLmr']:.2f} |")
EOF
}

echo "$WORKLOAD, $THREADS threads, $SECONDS_RUN s under callgrind (D1 48 KiB, LL 2 MiB); per query, two busiest threads:"
echo
echo "| proxy | queries | instructions | L1 read misses | L1 write misses | LL read misses |"
echo "|---|---|---|---|---|---|"
measure zerodb "$PROXY_PORT" "$proxy_bin" --config "$dir/proxy.yaml"
[ "${CG_SKIP_HAPROXY:-0}" = 1 ] || measure haproxy "$HAPROXY_PORT" "$haproxy" -db -f "$dir/haproxy.cfg"
