#!/usr/bin/env python3
"""Load for the failover benchmark: one session, writing or reading.

A writer inserts unique ids into app.acks (autocommit); a reader selects the
newest row. Every statement's start, end and outcome (0, or the MySQL error
code) is recorded against the wall clock; the session reconnects only when
the connection itself is lost. Writes a JSON file at the end.

usage: failover_load.py HOST PORT USER PASSWORD SECONDS SESSION_ID write|read OUT.json
"""
import json
import sys
import time

import pymysql

host, port, user, password, seconds, sid, mode, out = sys.argv[1:9]
port, seconds, sid = int(port), float(seconds), int(sid)

events, acked, reconnects = [], [], 0
conn, n = None, 0
deadline = time.time() + seconds
LOST = (2006, 2013, 2014)

while time.time() < deadline:
    if conn is None:
        try:
            conn = pymysql.connect(host=host, port=port, user=user, password=password,
                                   database="app", autocommit=True, connect_timeout=5,
                                   read_timeout=30, write_timeout=30)
        except pymysql.err.MySQLError as e:
            t = time.time()
            events.append([t, t, e.args[0] if e.args else -1])
            time.sleep(0.05)
            continue
    n += 1
    row_id = sid * 10_000_000 + n if mode == "write" else 0
    start = time.time()
    try:
        with conn.cursor() as c:
            if mode == "write":
                c.execute("INSERT INTO acks (id, writer) VALUES (%s, %s)", (row_id, sid))
                acked.append(row_id)
            else:
                c.execute("SELECT MAX(id) FROM acks")
                c.fetchall()
        events.append([start, time.time(), 0, row_id])
    except (pymysql.err.MySQLError, pymysql.err.InterfaceError) as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else -1
        events.append([start, time.time(), code, row_id])
        if code in LOST or code == -1:
            try:
                conn.close()
            except Exception:
                pass
            conn, reconnects = None, reconnects + 1
        time.sleep(0.01)
        continue
    time.sleep(0.002)

with open(out, "w") as f:
    json.dump({"session": sid, "mode": mode, "events": events, "acked": acked,
               "reconnects": reconnects}, f)
