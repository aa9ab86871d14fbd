"""What a session's autocommit is, as its login said and as it behaves.
Usage: autocommit_client.py HOST PORT USER PASSWORD DB MODE

MODE `login`: prints `login autocommit=0|1 server=0|1 escapes=E`: the
status flag of the login OK (which PyMySQL keeps as the session's
autocommit), what the first statement finds in @@autocommit (they must
agree), and how PyMySQL escapes a quote given the login's
NO_BACKSLASH_ESCAPES flag.

MODE `session`: prints the login line, inserts row 1 into `ac`, prints
`ready`, waits for a line on stdin (the test swaps the datasource
meanwhile), inserts row 2, prints `after autocommit=<@@autocommit>` and
`done`, and disconnects without COMMIT: whatever the client was told
autocommits must already be committed."""

import sys

import pymysql

host, port, user, password, db, mode = sys.argv[1:7]
# autocommit=None: keep the server's (here: the login's) autocommit.
conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                       database=db, autocommit=None)
said = int(conn.get_autocommit())
if mode == "login":
    cur = conn.cursor()
    cur.execute("SELECT @@autocommit")
    server = cur.fetchone()[0]
    print(f"login autocommit={said} server={server} escapes={conn.escape(chr(39))}", flush=True)
else:
    print(f"login autocommit={said}", flush=True)
if mode == "session":
    cur = conn.cursor()
    cur.execute("INSERT INTO ac VALUES (1)")
    print("ready", flush=True)
    sys.stdin.readline()
    cur.execute("INSERT INTO ac VALUES (2)")
    cur.execute("SELECT @@autocommit")
    print(f"after autocommit={cur.fetchone()[0]}", flush=True)
    print("done", flush=True)
conn.close()
