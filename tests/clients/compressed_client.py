"""Drives zerodb-proxy over the compressed protocol with MySQL
Connector/Python (pure Python, compress=True).
Usage: compressed_client.py HOST PORT USER PASSWORD DB

Each check prints 'ok <name>' or raises; the script exits non-zero on the
first failure, so the Rust test that runs it fails with the message."""

import hashlib
import os
import sys
import tempfile

import mysql.connector

host, port, user, password, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def ok(name):
    print("ok", name, flush=True)


def connect(**kw):
    args = dict(host=host, port=port, user=user, password=password, database=db,
                use_pure=True, autocommit=True, compress=True)
    args.update(kw)
    return mysql.connector.connect(**args)


c = connect()
cur = c.cursor()
cur.execute("SELECT 1 + 1, DATABASE()")
assert cur.fetchone() == (2, db)
ok("a statement over the compressed protocol")

# A result that deflates well, and one that does not (random bytes go out
# as they are, in compressed packets that say so).
cur.execute("SELECT REPEAT('ab', 4000000)")
got = cur.fetchone()[0]
if got != "ab" * 4000000:
    first = next((i for i, (x, y) in enumerate(zip(got, "ab" * 4000000)) if x != y), None)
    raise AssertionError(f"{type(got)} of {len(got)}, first difference at {first}: {got[first - 8:first + 8] if first else ''}")
cur.execute("SELECT RANDOM_BYTES(1024), SHA2(REPEAT('q', 100), 256)")
raw, digest = cur.fetchone()
assert len(raw) == 1024 and digest == hashlib.sha256(b"q" * 100).hexdigest(), (len(raw), digest)
ok("compressible and incompressible results")

# Binary data both ways, through prepared statements. One value is over
# 16 MiB, so its statement spans several frames inside the compressed
# packets; it is checked by the server (Connector/Python splits a row over
# 16 MiB into two when it reads one compressed, from MariaDB directly too).
pc = c.cursor(prepared=True)
pc.execute("DROP TABLE IF EXISTS zblob")
pc.execute("CREATE TABLE zblob (id INT PRIMARY KEY, b LONGBLOB)")
small = os.urandom(300_000)
medium = os.urandom(5_000_000)
# 18 MB that deflates (Connector/Python cannot send a 16 MiB chunk that
# does not: its compressed length overflows the 3-byte header).
large = os.urandom(1000) * 18_000
for i, value in [(1, small), (2, medium), (3, large)]:
    pc.execute("INSERT INTO zblob VALUES (?, ?)", (i, value))
pc.execute("SELECT id, b FROM zblob WHERE id < ? ORDER BY id", (3,))
rows = pc.fetchall()
assert [(r[0], len(r[1])) for r in rows] == [(1, len(small)), (2, len(medium))], [(r[0], len(r[1])) for r in rows]
assert bytes(rows[0][1]) == small and bytes(rows[1][1]) == medium, "blob round trip"
cur.execute("SELECT LENGTH(b), SHA2(b, 256) FROM zblob WHERE id = 3")
assert cur.fetchone() == (len(large), hashlib.sha256(large).hexdigest())
pc.close()
ok("prepared statements with blobs of 300 KB, 5 MB and 18 MB")

# LOAD DATA LOCAL: the file's packets come compressed.
lc = connect(allow_local_infile=True)
lcur = lc.cursor()
lcur.execute("DROP TABLE IF EXISTS zload")
lcur.execute("CREATE TABLE zload (id INT PRIMARY KEY, v VARCHAR(20))")
with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    for i in range(20000):
        f.write(f"{i},row{i % 1000}\n")
    path = f.name
lcur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE zload FIELDS TERMINATED BY ','")
lcur.execute("SELECT COUNT(*), MAX(v) FROM zload")
assert lcur.fetchone() == (20000, "row999"), "LOAD DATA LOCAL"
os.unlink(path)
lc.close()
ok("LOAD DATA LOCAL INFILE")

# COM_RESET_CONNECTION inside the compressed session (Connector/Python
# refuses COM_CHANGE_USER under compression; the mariadb CLI test runs it).
cur.execute("SET @w = 8")
c.cmd_reset_connection()
cur = c.cursor()
cur.execute("SELECT @w, DATABASE()")
assert cur.fetchone() == (None, db)
ok("reset_connection")
c.close()
print("all compressed checks passed")
