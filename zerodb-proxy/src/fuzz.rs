//! Entry points for fuzzing the decoders that read bytes from the network.
//!
//! Each function takes arbitrary bytes, drives one decoder the way the
//! proxy does, and checks what must hold whatever the input: it panics only
//! when an invariant breaks (a panic is what a fuzzer reports). The fuzz
//! targets under `fuzz/` call these, and the ordinary tests replay every
//! committed corpus and regression input through them, so a crash found
//! once stays fixed.
//!
//! | function | what it reads | from whom |
//! |---|---|---|
//! | [`client_stream`] | frames, packets, command payloads; the same bytes as compressed packets | a client |
//! | [`server_response`] | a response's frames, rows, column definitions | a server |
//! | [`sql_text`] | statement text | a client |
//! | [`handshake`] | the handshake response, COM_CHANGE_USER, scrambles | a client |

use crate::auth::{self, Method, Secret};
use crate::protocol::compress::Zlib;
use crate::protocol::frame::{assemble, put_packet, Assembled, FrameHeader};
use crate::protocol::packets::{self, column_type, read_lenenc_str};
use crate::protocol::{caps, cmd, ResponseKind, ResponseParser, Step};
use crate::session::{refused_client_charset, value_literal, ChangeUser, Login41, Stmt};
use crate::sql;
use bytes::BytesMut;
use mysql_common::auth::plugins::{
    caching_sha2_password::scramble_sha256, mysql_native_password::scramble_native,
};

/// The largest logical packet the harness accepts (a fuzzer never writes
/// 16 MiB frames; the limit only has to be passed sometimes).
const MAX_PACKET: usize = 1 << 16;

/// A byte stream from a client: logical packets are assembled from frames
/// as the proxy reads them, and each command is decoded as the session
/// would (statement text, parameter types of an execution, a change of
/// user). Holds: an assembled packet framed again gives back exactly the
/// bytes it came from; rewriting an execution's types only ever inserts
/// the types kept. The same bytes are also read as compressed packets
/// (what a compressed session reads), and the whole frames among them,
/// packed as the proxy packs its answers, unpack to themselves.
pub fn client_stream(data: &[u8]) {
    compressed(data);
    let mut rest = data;
    loop {
        match assemble(rest, MAX_PACKET) {
            Assembled::Packet {
                payload,
                first_seq,
                last_seq,
                consumed,
            } => {
                assert!(consumed <= rest.len() && consumed >= 4 + payload.len());
                let mut again = BytesMut::new();
                let next = put_packet(&mut again, first_seq, &payload);
                assert_eq!(&again[..], &rest[..consumed], "framing round trip");
                assert_eq!(next, last_seq.wrapping_add(1));
                command(&payload);
                rest = &rest[consumed..];
            }
            Assembled::Incomplete { need } => {
                assert!(need > 0);
                return;
            }
            Assembled::TooLarge { len } => {
                assert!(len > MAX_PACKET);
                return;
            }
            Assembled::BadSequence { expected, got } => {
                assert_ne!(expected, got);
                return;
            }
        }
    }
}

/// `data` as compressed packets from a client, unpacked (whatever they
/// say, within the header's limits); and packed then unpacked again.
fn compressed(data: &[u8]) {
    let mut z = Zlib::after(BytesMut::from(data));
    let mut plain = BytesMut::new();
    if let Ok(n) = z.inflate(&mut plain) {
        assert_eq!(n, plain.len());
    }
    let mut packer = Zlib::default();
    packer.deflate(data);
    let mut peer = Zlib::after(packer.out.split());
    let mut back = BytesMut::new();
    peer.inflate(&mut back)
        .expect("what the proxy packs unpacks");
    assert!(
        data.starts_with(&back),
        "packed frames unpack to themselves"
    );
}

/// One command payload, decoded as the session decodes it.
fn command(p: &[u8]) {
    let Some(&command) = p.first() else {
        return;
    };
    match command {
        cmd::QUERY | cmd::STMT_PREPARE => sql_text(&p[1..]),
        cmd::INIT_DB => {
            let _ = sql::parse_use(&p[1..]);
        }
        cmd::STMT_EXECUTE => {
            for params in [0, 1, 2, 9] {
                bound_types(p, params, false);
            }
        }
        cmd::STMT_BULK_EXECUTE => {
            for params in [0, 1, 3] {
                bound_types(p, params, true);
            }
        }
        cmd::CHANGE_USER => {
            for client_caps in [0, caps::SECURE_CONNECTION | caps::PLUGIN_AUTH] {
                if let Some(c) = ChangeUser::parse(&p[1..], client_caps) {
                    let _ = c.collation.and_then(refused_client_charset);
                    login_checks(c.plugin.as_deref().and_then(Method::from_name), &c.auth);
                }
            }
        }
        _ => {
            let _ = packets::u32_at(p, 1);
        }
    }
}

/// An execution's parameter types as a statement of `params` parameters
/// tracks them, before and after a move to another server.
fn bound_types(p: &[u8], params: u16, bulk: bool) {
    let kept = [0x08, 0x00].repeat(usize::from(params));
    let mut stmt = Stmt {
        sql: Vec::new(),
        backend_id: Some(1),
        params,
        types: Some(kept.clone()),
        types_needed: true,
    };
    let out = if bulk {
        stmt.bind_bulk_types(p.to_vec())
    } else {
        stmt.bind_types(p.to_vec())
    };
    let Some(out) = out else {
        return;
    };
    assert!(
        out.len() == p.len() || out.len() == p.len() + kept.len(),
        "types inserted or not at all"
    );
    assert!(!stmt.types_needed || params == 0);
    if out.len() > p.len() {
        let at = out
            .windows(kept.len().max(1))
            .position(|w| w == kept.as_slice());
        assert!(at.is_some(), "the kept types are what was inserted");
    }
}

/// One response from a server: `data[0]` chooses the command it answers
/// and the connection's flags (bits 0–2 the kind, 3 a cursor, 4
/// `CLIENT_DEPRECATE_EOF`, 5 metadata caching, 6 progress reports); the
/// rest is frames. A
/// response that ends is followed by another of the same kind. Holds: a
/// frame after the end is refused; an ended response stands at a packet
/// boundary; values of text rows become SQL literals that are one
/// statement of printable ASCII.
pub fn server_response(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let kind = match flags & 7 {
        0 => ResponseKind::Query,
        1 => ResponseKind::Execute {
            cursor: flags & 8 != 0,
        },
        2 => ResponseKind::Fetch,
        3 => ResponseKind::FieldList,
        4 => ResponseKind::Prepare,
        _ => ResponseKind::Single,
    };
    let fresh = || {
        ResponseParser::new(kind, flags & 16 != 0)
            .with_cache_metadata(flags & 32 != 0)
            .with_progress(flags & 64 != 0)
    };
    let mut parser = fresh();
    let mut column = None;
    while let Some(h) = FrameHeader::parse(rest) {
        let Some(payload) = rest.get(4..h.total()) else {
            return;
        };
        rest = &rest[h.total()..];
        packet_fields(payload, &mut column, parser.expects_row());
        match parser.feed(payload) {
            Ok(Step::Done) => {
                assert!(parser.is_done() && parser.at_packet_start());
                assert!(parser.feed(payload).is_err(), "a frame after the end");
                parser = fresh();
            }
            Ok(Step::More | Step::LocalInfile) => assert!(!parser.is_done()),
            Err(_) => return,
        }
    }
}

/// The fields the proxy reads out of a server's packet: status flags,
/// errors, a column's type, and (for a text row) each value as a literal.
fn packet_fields(p: &[u8], column: &mut Option<packets::ColumnType>, row: bool) {
    if let Some(e) = packets::parse_err(p) {
        assert!(packets::is_err(p));
        let _ = e.code;
    }
    let _ = (packets::ok_status(p), packets::eof_status(p));
    if let Some(t) = column_type(p) {
        *column = Some(t);
    }
    let (Some(ty), true) = (*column, row) else {
        return;
    };
    let mut rest = p;
    while !rest.is_empty() {
        let value = if rest[0] == 0xfb {
            rest = &rest[1..];
            None
        } else {
            let Some((v, r)) = read_lenenc_str(rest) else {
                return;
            };
            rest = r;
            Some(v)
        };
        if let Some(lit) = value_literal(value, ty) {
            assert!(
                lit.iter().all(|c| c.is_ascii_graphic() || *c == b' '),
                "a literal is printable ASCII: {lit:?}"
            );
            assert_eq!(sql::split_statements(&lit).len(), 1, "one statement");
        }
    }
}

/// Statement text from a client, through every reading the proxy makes of
/// it. Holds: the statements split at `;` join back into the text; the
/// noise skipped and the words split off are suffixes of it; a rewritten
/// `CONNECTION_ID()` names the session's id.
pub fn sql_text(data: &[u8]) {
    let parts = sql::split_statements(data);
    assert_eq!(parts.join(&b';'), data, "split then joined");
    for s in sql::session_sets(data) {
        assert!(is_within(s, data));
        let _ = sql::parse_set(s);
    }
    let rest = sql::skip_noise(data);
    assert!(data.ends_with(rest));
    let (word, after) = sql::next_word(data);
    assert!(is_within(word, data) && data.ends_with(after));
    let kw = sql::first_keyword(data);
    assert!(kw.iter().all(|c| *c == 0 || !c.is_ascii_lowercase()));
    let _ = sql::starts_with_keyword(data, "SET");
    let _ = sql::parse_use(data);
    if let Some(Ok(k)) = sql::parse_kill(data, 7) {
        if let sql::KillTarget::Expr(e) = k.target {
            assert!(!e.is_empty() && is_within(e, data));
            let _ = sql::kill_target_uses_tables(e);
        }
    }
    if let sql::SetEffect::Session(assignments) = sql::parse_set(data) {
        for a in assignments {
            assert!(!a.key.is_empty());
        }
    }
    if let Some(out) = sql::rewrite_connection_id(data, 4_123_456_789) {
        assert!(
            out.windows(10).any(|w| w == b"4123456789"),
            "the session's id is in the rewritten text"
        );
    }
}

/// Whether `part` lies inside `whole` (compared by address: the lexer
/// hands out subslices, never copies).
fn is_within(part: &[u8], whole: &[u8]) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let at = part.as_ptr() as usize;
    part.is_empty() || (at >= start && at + part.len() <= end)
}

/// A client's handshake response (`data` after the SSL request, if any) or
/// the answer to an authentication switch. Holds: a response is accepted
/// exactly when it is the scramble of the password, for a plain password
/// and for a stored native hash alike.
pub fn handshake(data: &[u8]) {
    if let Some(login) = Login41::parse(data) {
        let _ = refused_client_charset(login.collation);
        let _ = (login.client_caps, login.mariadb_caps, login.user, login.db);
        login_checks(login.method, &login.response);
    }
    login_checks(Some(Method::Native), data);
    login_checks(Some(Method::CachingSha2), data);
}

/// Checks a client's scramble against a fixed salt and password.
fn login_checks(method: Option<Method>, response: &[u8]) {
    const SALT: [u8; auth::SALT_LEN] = *b"0123456789abcdefghij";
    const PASSWORD: &str = "fuzz-pw";
    let Some(method) = method else {
        return;
    };
    let right = match method {
        Method::Native => scramble_native(&SALT, PASSWORD.as_bytes()).map(|s| s.to_vec()),
        Method::CachingSha2 => scramble_sha256(&SALT, PASSWORD.as_bytes()).map(|s| s.to_vec()),
    };
    let is_right = right.as_deref() == Some(response);
    let plain = Secret::Password(PASSWORD.into());
    assert_eq!(auth::verify(method, &SALT, &plain, response), is_right);
    if method == Method::Native {
        // The same password held as MariaDB stores it: SHA1(SHA1(pw)),
        // computed once, not for every input.
        static HASH: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
        let hash = HASH.get_or_init(|| {
            use sha1::{Digest, Sha1};
            Secret::NativeHash(Sha1::digest(Sha1::digest(PASSWORD.as_bytes())).into())
        });
        assert_eq!(auth::verify(method, &SALT, hash, response), is_right);
    }
}
