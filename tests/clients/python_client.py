"""Drives zerodb-proxy with real Python drivers (PyMySQL and
mysql-connector-python). Usage: python_client.py HOST PORT USER PASSWORD DB

Each check prints 'ok <name>' or raises. The script exits non-zero on the
first failure, so the Rust test that runs it fails with the message."""

import sys
import os
import hashlib

import pymysql
import mysql.connector

host, port, user, password, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def ok(name):
    print("ok", name, flush=True)


def pymysql_conn(**kw):
    args = dict(host=host, port=port, user=user, password=password, database=db, autocommit=True)
    args.update(kw)
    return pymysql.connect(**args)


# Wrong password: error 1045, like MySQL.
try:
    pymysql_conn(password=password + "x")
    raise AssertionError("wrong password was accepted")
except pymysql.err.OperationalError as e:
    assert e.args[0] == 1045, e
    assert "Access denied" in e.args[1], e
ok("wrong password refused with 1045")

# Unknown schema fails the login with the server's error.
try:
    pymysql_conn(database="no_such_db_here")
    raise AssertionError("unknown schema accepted")
except pymysql.err.OperationalError as e:
    assert e.args[0] == 1049, e
ok("unknown schema refused with 1049")

# Multi-statements and multiple result sets.
c = pymysql_conn(client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
cur.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c; DO 1; SELECT 'x'")
sets = [cur.fetchall()]
while cur.nextset():
    sets.append(cur.fetchall())
assert sets[0] == ((1,),) and sets[1] == ((2, 3),) and sets[-1] == (("x",),), sets
ok("multi-statement results")

# A stored procedure returns several results plus a final OK.
cur.execute("DROP PROCEDURE IF EXISTS zp")
cur.execute("CREATE PROCEDURE zp() BEGIN SELECT 1; SELECT 2, 3; END")
cur.execute("CALL zp()")
first = cur.fetchall()
cur.nextset()
second = cur.fetchall()
assert first == ((1,),) and second == ((2, 3),), (first, second)
while cur.nextset():
    pass
ok("stored procedure multi-results")

# More than 16 MiB each way (a logical packet split across frames).
cur.execute("DROP TABLE IF EXISTS zblob")
cur.execute("CREATE TABLE zblob (id INT PRIMARY KEY, b LONGBLOB)")
big = os.urandom(17 * 1024 * 1024 + 5)
cur.execute("INSERT INTO zblob VALUES (1, %s)", (big,))
cur.execute("SELECT b, LENGTH(b) FROM zblob WHERE id = 1")
got, n = cur.fetchone()
assert n == len(big) and hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
ok("17 MiB BLOB round trip")
# Exactly one frame's worth: the protocol needs an empty trailing frame.
exact = os.urandom(0xFFFFFF - 40)
cur.execute("UPDATE zblob SET b = %s WHERE id = 1", (exact,))
cur.execute("SELECT b FROM zblob WHERE id = 1")
assert cur.fetchone()[0] == exact
ok("frame-boundary BLOB round trip")

c.close()

# LOAD DATA LOCAL INFILE: the server asks the client for the file, and the
# client's packets are relayed to it.
import tempfile
lc = pymysql_conn(local_infile=True)
cur = lc.cursor()
cur.execute("DROP TABLE IF EXISTS zload")
cur.execute("CREATE TABLE zload (id INT PRIMARY KEY, v VARCHAR(20))")
with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    for i in range(1, 5001):
        f.write(f"{i},row{i}\n")
    path = f.name
cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE zload FIELDS TERMINATED BY ','")
cur.execute("SELECT COUNT(*), MAX(v) FROM zload")
assert cur.fetchone() == (5000, "row999"), "LOAD DATA LOCAL"
os.unlink(path)
lc.close()
ok("LOAD DATA LOCAL INFILE")

# Prepared statements over the binary protocol (mysql-connector).
mc = mysql.connector.connect(host=host, port=port, user=user, password=password, database=db,
                             use_pure=True, autocommit=True)
pc = mc.cursor(prepared=True)
pc.execute("DROP TABLE IF EXISTS ztypes")
pc.execute("""CREATE TABLE ztypes (id INT PRIMARY KEY, i BIGINT, f DOUBLE, d DECIMAL(10,3), s VARCHAR(50),
              b VARBINARY(20), dt DATETIME(6), t TIME, n INT NULL)""")
import datetime
import decimal
row = (1, -9000000000, 3.5, decimal.Decimal("12.345"), "héllo", b"\x00\x01\xff",
       datetime.datetime(2024, 2, 29, 13, 14, 15, 123456), datetime.timedelta(hours=-5, minutes=3), None)
pc.execute("INSERT INTO ztypes VALUES (?,?,?,?,?,?,?,?,?)", row)
pc.execute("SELECT id, i, f, d, s, b, dt, t, n FROM ztypes WHERE id = ?", (1,))
got = pc.fetchone()
assert got[0] == 1 and got[1] == -9000000000 and got[2] == 3.5 and got[3] == decimal.Decimal("12.345"), got
assert got[4] == "héllo" and bytes(got[5]) == b"\x00\x01\xff" and got[6] == row[6] and got[8] is None, got
ok("prepared statement with every parameter type")
# Re-execute the same statement (types not re-sent by the driver).
for i in range(2, 6):
    pc.execute("INSERT INTO ztypes (id, i) VALUES (?, ?)", (i, i * 10))
pc.execute("SELECT COUNT(*), SUM(i) FROM ztypes WHERE id >= ?", (2,))
assert tuple(pc.fetchone()) == (4, decimal.Decimal(140)), "re-executed statement"
ok("prepared statement re-executed")
pc.close()

# COM_CHANGE_USER through mysql-connector (re-authenticates).
mc.cmd_change_user(username=user, password=password, database=db)
cur = mc.cursor()
cur.execute("SELECT DATABASE()")
assert cur.fetchone()[0] == db
ok("change_user with the right password")
cur.execute("SET @v = 7")
try:
    mc.cmd_change_user(username=user, password="wrong", database=db)
    raise AssertionError("change_user with a wrong password succeeded")
except mysql.connector.Error as e:
    assert e.errno == 1045, e
ok("change_user with a wrong password refused with 1045")
# As on MariaDB, the session goes on, in its schema, otherwise reset.
cur = mc.cursor()
cur.execute("SELECT DATABASE(), @v")
assert tuple(cur.fetchone()) == (db, None)
ok("the session goes on after a refused change_user, reset")
# After three refusals, no more tries (MariaDB's MDEV-3915): 1047, even
# with the right password.
for attempt, right in [(2, False), (3, False), (4, True)]:
    try:
        mc.cmd_change_user(username=user, password=password if right else "wrong", database=db)
        raise AssertionError(f"change_user attempt {attempt} succeeded")
    except mysql.connector.Error as e:
        assert e.errno == (1047 if attempt > 3 else 1045), (attempt, e)
ok("after three refused change_users the fourth is refused with 1047")
try:
    mc.close()
except Exception:
    pass

# COM_RESET_CONNECTION clears session variables.
mc = mysql.connector.connect(host=host, port=port, user=user, password=password, database=db, use_pure=True)
cur = mc.cursor()
cur.execute("SET @zz = 5")
mc.cmd_reset_connection()
cur = mc.cursor()
cur.execute("SELECT @zz, DATABASE()")
assert cur.fetchone() == (None, db)
ok("reset_connection clears variables and keeps the schema")
mc.close()
print("all python checks passed")
