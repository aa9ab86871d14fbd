#!/usr/bin/env python3
"""An autocommit writer for failover tests.

Inserts unique ids into app.acks through the proxy for SECONDS seconds and
prints one JSON object: the ids the server acknowledged, errors by MySQL
error code, and how many times it had to reconnect.

usage: writer.py HOST PORT USER PASSWORD SECONDS WRITER_ID
"""
import json
import sys
import time

import pymysql

host, port, user, password, seconds, writer = sys.argv[1:7]
port, seconds, writer = int(port), float(seconds), int(writer)

acked, errors, reconnects = [], {}, 0
conn = None
n = 0
deadline = time.time() + seconds


def count(code):
    errors[str(code)] = errors.get(str(code), 0) + 1


while time.time() < deadline:
    if conn is None:
        try:
            conn = pymysql.connect(host=host, port=port, user=user, password=password,
                                   database="app", autocommit=True, connect_timeout=3,
                                   read_timeout=15, write_timeout=15)
        except pymysql.err.MySQLError as e:
            count(e.args[0] if e.args else "connect")
            time.sleep(0.1)
            continue
    n += 1
    row_id = writer * 10_000_000 + n
    try:
        with conn.cursor() as c:
            c.execute("INSERT INTO acks (id, writer) VALUES (%s, %s)", (row_id, writer))
        acked.append(row_id)
    except pymysql.err.MySQLError as e:
        code = e.args[0] if e.args else "?"
        count(code)
        if code in (2006, 2013, 2014) or isinstance(e, pymysql.err.InterfaceError):
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            reconnects += 1
        time.sleep(0.05)
        continue
    time.sleep(0.005)

print(json.dumps({"acked": acked, "errors": errors, "reconnects": reconnects}))
