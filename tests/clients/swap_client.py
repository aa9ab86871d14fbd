"""Sessions that must survive a datasource swap. Usage:
swap_client.py HOST PORT USER PASSWORD OLD_SERVER_ID NEW_SERVER_ID

Protocol with the test: prints 'ready' once its sessions are set up and the
writer runs; reads a line ('go') after the swap; then checks every session
and prints a JSON summary as its last line. Exits non-zero on any failure."""

import json
import sys
import threading
import time

import mysql.connector
import pymysql

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
old_id, new_id = int(sys.argv[5]), int(sys.argv[6])


def connect():
    return pymysql.connect(host=host, port=port, user=user, password=password, database="app", autocommit=True)


# The autocommit writer: unique ids, every acknowledgement counted.
w = connect()
w.cursor().execute("CREATE TABLE IF NOT EXISTS w (id BIGINT PRIMARY KEY, at DOUBLE)")
stop = threading.Event()
acked, errors = [], []


def writer():
    conn = connect()
    i = 0
    while not stop.is_set():
        i += 1
        try:
            conn.cursor().execute("INSERT INTO w VALUES (%s, %s)", (i, time.time()))
            acked.append(i)
        except Exception as e:  # every error is a failure of the proxy here
            errors.append(repr(e))
        time.sleep(0.002)


t = threading.Thread(target=writer)
t.start()

# A session with state: schema, user variable, session variable, charset,
# a prepared statement (binary protocol).
s = mysql.connector.connect(host=host, port=port, user=user, password=password, database="app",
                            use_pure=True, autocommit=True, charset="utf8mb4", collation="utf8mb4_bin")
c = s.cursor()
c.execute("SET @v = 42, SESSION sql_mode = 'ANSI_QUOTES', SESSION wait_timeout = 1234")
ps = s.cursor(prepared=True)
ps.execute("SELECT ? + 1, @@server_id", (1,))
assert tuple(ps.fetchone()) == (2, old_id), "before the swap the session is on the old server"

# A session inside a transaction.
tx = connect()
tc = tx.cursor()
tc.execute("BEGIN")
tc.execute("SELECT COUNT(*) FROM w")
# Another, whose first word after the swap is ROLLBACK: that just works.
tx2 = connect()
tc2 = tx2.cursor()
tc2.execute("START TRANSACTION")
tc2.execute("SELECT 1")

print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.5)

summary = {}
# The stateful session moved: same ids, same state, new server.
ps.execute("SELECT ? + 1, @@server_id", (41,))
got = tuple(ps.fetchone())
assert got == (42, new_id), f"prepared statement after the swap: {got}"
c.execute("SELECT @v, @@sql_mode, @@wait_timeout, DATABASE(), @@collation_connection, @@server_id")
got = c.fetchone()
assert got[0] == 42 and "ANSI_QUOTES" in got[1] and got[2] == 1234 and got[3] == "app", got
assert got[4] == "utf8mb4_bin" and got[5] == new_id, got
summary["stateful_session"] = "moved"

# The transaction gets the documented error until it ends, then carries on.
try:
    tc.execute("INSERT INTO w VALUES (%s, 0)", (-1,))
    raise AssertionError("a statement in a transaction crossed the swap")
except pymysql.err.OperationalError as e:
    assert e.args[0] == 9103 and "rolled back" in e.args[1], e
    summary["transaction_error"] = e.args[0]
tc.execute("ROLLBACK")
tc.execute("SELECT @@server_id")
assert tc.fetchone()[0] == new_id
summary["transaction_session_after_rollback"] = "ok"
tc2.execute("ROLLBACK")
tc2.execute("SELECT @@server_id")
assert tc2.fetchone()[0] == new_id
summary["rollback_right_after_swap"] = "ok"

time.sleep(1.0)
stop.set()
t.join()
summary["writer_acked"] = len(acked)
summary["writer_errors"] = errors
assert not errors, errors
print(json.dumps(summary), flush=True)
