#!/usr/bin/env bash
# Installs what zeroDB's tests, demo and benchmarks use, from Debian's
# packages and PyPI, when it is not there already. Safe to run again.
set -euo pipefail
pkgs=()
[ -x /usr/sbin/mariadbd ] || pkgs+=(mariadb-server)
command -v mariadb >/dev/null || pkgs+=(mariadb-client)
command -v sysbench >/dev/null || pkgs+=(sysbench)
# MariaDB's own test suites (mariadb-test-run, mariadb-client-test): the
# conformance yardstick.
[ -f /usr/share/mysql/mysql-test/mariadb-test-run.pl ] || pkgs+=(mariadb-test)
# etcd: the keeper's store in the tests (a real cluster, started by each
# test), etcdctl to drive it, and protoc to build the etcd-client crate.
command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || pkgs+=(etcd-server)
command -v etcdctl >/dev/null || pkgs+=(etcd-client)
command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
# openssl: the TLS tests make their own CA and certificates.
command -v openssl >/dev/null || pkgs+=(openssl)
if [ "${WITH_HAPROXY:-0}" = 1 ] && ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  pkgs+=(haproxy)
fi
if ((${#pkgs[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${pkgs[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if ! python3 -c 'import pymysql, mysql.connector' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check pymysql mysql-connector-python
fi
