//! Bad input from clients and backends: each gets a MySQL error or a closed
//! connection, never a panic or a hang, and other sessions carry on.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use zerodb_proxy::backend::{BackendConn, BackendKey};
use zerodb_proxy::protocol::frame::put_packet;

/// A server, a proxy in front of it (config plus `extra`), and a healthy
/// session that every test checks is untouched at the end.
fn setup(extra: &str) -> (tokio::runtime::Runtime, MariaDb, Proxy, BackendConn) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&format!("{}{extra}", one_datahost_config(&[&db])));
    let healthy = rt
        .block_on(BackendConn::connect(
            &params(proxy.port),
            BackendKey::default(),
        ))
        .expect("healthy login");
    (rt, db, proxy, healthy)
}

fn send(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let mut b = bytes::BytesMut::new();
    put_packet(&mut b, seq, payload);
    s.write_all(&b).expect("write");
}

fn assert_alive(rt: &tokio::runtime::Runtime, proxy: &Proxy, healthy: &mut BackendConn) {
    rt.block_on(healthy.execute("SELECT 1"))
        .unwrap_or_else(|e| panic!("the healthy session broke: {e}\n{}", proxy.log()));
    assert!(
        !proxy.log().contains("panicked"),
        "panic in proxy:\n{}",
        proxy.log()
    );
}

#[test]
fn malformed_client_input() {
    let (rt, _db, proxy, mut healthy) = setup("max_allowed_packet: 1048576\n");

    // Garbage before the handshake is read.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    s.write_all(&[0x5a; 300]).expect("write");
    let (_, closed) = read_all(&mut s, Duration::from_secs(5));
    assert!(
        closed,
        "garbage before the handshake must close the connection"
    );
    assert_alive(&rt, &proxy, &mut healthy);

    // A handshake response that is not one: error 1043.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut greeting = [0u8; 256];
    let _ = s.read(&mut greeting).expect("greeting");
    send(&mut s, 1, &[0xff; 40]);
    let (got, closed) = read_all(&mut s, Duration::from_secs(5));
    assert!(closed);
    assert!(matches!(err_code(&got), Some(1043)), "{got:?}");

    // A packet announced bigger than max_allowed_packet: 1153 and a close,
    // before the proxy buffers it.
    let mut s = logged_in(&rt, proxy.port);
    s.write_all(&[0x00, 0x00, 0x20, 0x00, 0x03])
        .expect("header of 2 MiB");
    let (got, closed) = read_all(&mut s, Duration::from_secs(5));
    assert!(closed && err_code(&got) == Some(1153), "{got:?}");

    // A command that does not start at sequence id 0: 1156 and a close.
    let mut s = logged_in(&rt, proxy.port);
    send(&mut s, 3, b"\x03SELECT 1");
    let (got, closed) = read_all(&mut s, Duration::from_secs(5));
    assert!(closed && err_code(&got) == Some(1156), "{got:?}");

    // A truncated packet, then the client hangs up.
    let mut s = logged_in(&rt, proxy.port);
    s.write_all(&[100, 0, 0, 0, 0x03, b'S', b'E'])
        .expect("partial");
    drop(s);

    // Unknown commands, unknown statement ids, an empty packet: errors, and
    // the session goes on.
    let mut s = logged_in(&rt, proxy.port);
    for (payload, code) in [
        (&b"\x12\x00\x00\x00\x00"[..], 1047u16),
        (&b"\x17\x63\x00\x00\x00\x00\x01\x00\x00\x00"[..], 1243),
        (&b""[..], 1835),
        (&b"\xf0\x01\x00\x00\x00"[..], 1047),
        // Bulk execution of a statement never prepared.
        (&b"\xfa\x01\x00\x00\x00"[..], 1243),
    ] {
        send(&mut s, 0, payload);
        let mut hdr = [0u8; 7];
        s.read_exact(&mut hdr).expect("error packet");
        assert_eq!(
            (hdr[4], u16::from_le_bytes([hdr[5], hdr[6]])),
            (0xff, code),
            "for {payload:?}"
        );
        let len = usize::from(hdr[0]) | usize::from(hdr[1]) << 8;
        let mut rest = vec![0u8; len - 3];
        s.read_exact(&mut rest).expect("rest");
    }
    send(&mut s, 0, b"\x0e");
    let mut ok = [0u8; 11];
    s.read_exact(&mut ok).expect("ping answer");
    assert_eq!(ok[4], 0x00, "ping after errors");
    assert_alive(&rt, &proxy, &mut healthy);
}

/// Mutated commands: whatever the bytes, the proxy answers or closes within
/// a bound, and other sessions are untouched.
#[test]
fn mutated_commands_never_hang_or_panic() {
    let (rt, _db, proxy, mut healthy) = setup("");
    let seeds: [&[u8]; 8] = [
        b"\x03SELECT 1",
        b"\x03SET @a = 1",
        b"\x02app",
        b"\x16SELECT ?, ?",
        b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00\x08\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00",
        b"\x1c\x01\x00\x00\x00\x05\x00\x00\x00",
        b"\x04t\x00",
        b"\x11app\x00\x14aaaaaaaaaaaaaaaaaaaa\x00\x21\x00",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x2e60db);
    for round in 0..120 {
        let mut s = logged_in(&rt, proxy.port);
        // A statement to mutate the execute/fetch seeds against.
        send(&mut s, 0, b"\x16SELECT ?, ?");
        let _ = read_all(&mut s, Duration::from_millis(60));
        let mut p = seeds[rng.random_range(0..seeds.len())].to_vec();
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..3) {
                0 if !p.is_empty() => {
                    let i = rng.random_range(0..p.len());
                    p[i] = rng.random();
                }
                1 if !p.is_empty() => p.truncate(rng.random_range(0..p.len())),
                _ => p.push(rng.random()),
            }
        }
        if p.first() == Some(&0x01) {
            continue; // COM_QUIT closes by design
        }
        send(&mut s, 0, &p);
        // Then a ping: its answer (or a close) must come.
        send(&mut s, 0, b"\x0e");
        let (_, closed) = read_all(&mut s, Duration::from_millis(80));
        if !closed {
            // Still open: the session must still answer.
            send(&mut s, 0, b"\x0e");
            let mut hdr = [0u8; 5];
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            if let Err(e) = s.read_exact(&mut hdr) {
                // A close is fine; silence is not.
                assert!(
                    e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut,
                    "round {round}: no answer after {p:?}"
                );
            }
        }
    }
    assert_alive(&rt, &proxy, &mut healthy);
}

#[test]
fn client_vanishing_mid_result_frees_its_backend() {
    let (rt, db, proxy, mut healthy) = setup("");
    let mut s = logged_in(&rt, proxy.port);
    // About 400 MB of rows: far more than socket buffers hold.
    send(
        &mut s,
        0,
        b"\x03SELECT REPEAT('x', 200000) FROM app.seq_1_to_2000",
    );
    let mut buf = vec![0u8; 65536];
    s.read_exact(&mut buf).expect("the start of the result");
    let before = db.sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT REPEAT%'",
    );
    assert_eq!(before, "1");
    drop(s);
    let started = Instant::now();
    loop {
        let n = db.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT REPEAT%'",
        );
        if n == "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the backend kept streaming to nobody"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_alive(&rt, &proxy, &mut healthy);
}

#[test]
fn backend_dying_mid_result_is_an_error_not_a_hang() {
    let mut db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    let port = proxy.port;
    let reader = std::thread::spawn(move || {
        let script = format!(
            "import pymysql, pymysql.cursors, time\n\
             c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', database='app', cursorclass=pymysql.cursors.SSCursor)\n\
             cur = c.cursor()\n\
             cur.execute(\"SELECT REPEAT('x', 100000) FROM seq_1_to_1000000\")\n\
             print('streaming', flush=True)\n\
             t = time.time()\n\
             try:\n    n = 0\n    for row in cur:\n        n += 1\n        if n == 10: print('reading', flush=True)\n        time.sleep(0.001)\n    print('finished?!')\n\
             except Exception as e:\n    print('error', type(e).__name__, e.args[0] if e.args else '', round(time.time() - t, 1))\n"
        );
        Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3")
    });
    let started = Instant::now();
    while db
        .sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT REPEAT%'")
        != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reader never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    db.kill();
    let out = reader.join().expect("reader");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The client learnt within seconds (the proxy relays what the server
    // sent, then the error or the close).
    let secs: f64 = stdout
        .lines()
        .find(|l| l.starts_with("error"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(99.0);
    assert!(secs < 10.0, "{stdout}");
    // New sessions get a clear error while the datasource is down.
    let out = proxy.cli(APP_USER, APP_PASSWORD, "", "SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("9101"), "{err}");
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

#[test]
fn bytes_sent_behind_a_slow_statement_wait_in_the_socket() {
    let (rt, _db, proxy, mut healthy) = setup("");
    let mut s = logged_in(&rt, proxy.port);
    send(&mut s, 0, b"\x03SELECT SLEEP(4)");
    // While it runs, push bytes for as long as the proxy takes them. The
    // proxy reads a bounded amount ahead (to see the client go away); the
    // rest must stay in the kernel's socket buffers, a few MiB, not in the
    // proxy's memory.
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let chunk = vec![0x42u8; 1 << 20];
    let mut pushed = 0usize;
    let started = Instant::now();
    while pushed < 256 << 20 && started.elapsed() < Duration::from_secs(3) {
        match s.write(&chunk) {
            Ok(n) => pushed += n,
            Err(_) => break,
        }
    }
    assert!(
        pushed < 64 << 20,
        "the proxy took {} MiB sent behind a running statement",
        pushed >> 20
    );
    assert_alive(&rt, &proxy, &mut healthy);
}
