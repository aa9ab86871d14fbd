//! The session state a server connection holds, kept so it can be replayed
//! on another server after a swap.

use crate::backend::{BackendConn, BackendError, Outcome};
use crate::errors::ClientError;
use crate::protocol::packets::ColumnType;
use crate::protocol::{cmd, status, ResponseKind};
use crate::sql::{Assignment, SetEffect};
use std::collections::{BTreeMap, HashSet};

/// A prepared statement, by the id the client knows it by.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: Vec<u8>,
    /// The id on the bound backend; `None` when it could not be prepared
    /// again after a move.
    pub backend_id: Option<u32>,
    pub params: u16,
    /// Parameter types the client last bound (2 bytes each).
    pub types: Option<Vec<u8>>,
    /// Re-prepared on a new backend, which has not seen the types yet.
    pub types_needed: bool,
}

impl Stmt {
    /// Tracks the parameter types of a COM_STMT_EXECUTE and, after a move,
    /// adds the types the client bound earlier (a client sends them only
    /// with its first execution). `None` for a malformed packet.
    pub fn bind_types(&mut self, mut p: Vec<u8>) -> Option<Vec<u8>> {
        let n = usize::from(self.params);
        if n == 0 {
            return Some(p);
        }
        // cmd(1) id(4) flags(1) iterations(4) null-bitmap new-params-bound(1)
        let at = 10 + n.div_ceil(8);
        match *p.get(at)? {
            1 => {
                self.types = Some(p.get(at + 1..at + 1 + 2 * n)?.to_vec());
                self.types_needed = false;
            }
            _ if self.types_needed => {
                if let Some(t) = &self.types {
                    p[at] = 1;
                    p.splice(at + 1..at + 1, t.iter().copied());
                    self.types_needed = false;
                }
            }
            _ => {}
        }
        Some(p)
    }

    /// [`Stmt::bind_types`] for a COM_STMT_BULK_EXECUTE: cmd(1) id(4)
    /// flags(2), then with `SEND_TYPES_TO_SERVER` (128) two bytes per
    /// parameter. Types sent are kept; after a move, a bulk execution that
    /// sends none gets the kept ones.
    pub fn bind_bulk_types(&mut self, mut p: Vec<u8>) -> Option<Vec<u8>> {
        const SEND_TYPES: u16 = 128;
        let n = usize::from(self.params);
        let flags = u16::from_le_bytes([*p.get(5)?, *p.get(6)?]);
        if n == 0 {
            return Some(p);
        }
        if flags & SEND_TYPES != 0 {
            self.types = Some(p.get(7..7 + 2 * n)?.to_vec());
            self.types_needed = false;
        } else if self.types_needed {
            if let Some(t) = &self.types {
                p[5..7].copy_from_slice(&(flags | SEND_TYPES).to_le_bytes());
                p.splice(7..7, t.iter().copied());
                self.types_needed = false;
            }
        }
        Some(p)
    }
}

/// The statement id that names the statement prepared last.
pub(super) const LAST_PREPARED: u32 = u32::MAX;

#[derive(Debug)]
pub(super) struct SessionState {
    pub schema: Option<Vec<u8>>,
    /// Server status flags after the last response.
    pub status: u16,
    /// COM_SET_OPTION's multi-statements setting, if the client changed it.
    pub multi_statements: Option<bool>,
    /// `SET` assignments in effect, by what they assign, oldest first.
    pub vars: Vec<(String, Vec<u8>)>,
    pub stmts: BTreeMap<u32, Stmt>,
    /// Prepared KILL statements, by client statement id: the proxy runs
    /// them itself (their ids are its own), so no server holds them.
    pub kills: BTreeMap<u32, Vec<u8>>,
    next_stmt: u32,
    /// The statement prepared last, if that prepare succeeded: what the
    /// id 0xFFFFFFFF names (MariaDB's "last prepared statement", which
    /// Connector/C's `mariadb_stmt_execute_direct` sends behind its
    /// COM_STMT_PREPARE without waiting for the id).
    pub last_prepared: Option<u32>,
    pub open_cursors: HashSet<u32>,
    pub long_data: HashSet<u32>,
    /// Set when the open transaction was lost: statements are refused until
    /// the client ends it.
    pub doomed: Option<String>,
}

impl Default for SessionState {
    fn default() -> Self {
        Self {
            schema: None,
            status: status::AUTOCOMMIT,
            multi_statements: None,
            vars: Vec::new(),
            stmts: BTreeMap::new(),
            kills: BTreeMap::new(),
            next_stmt: 0,
            last_prepared: None,
            open_cursors: HashSet::new(),
            long_data: HashSet::new(),
            doomed: None,
        }
    }
}

pub(super) enum ReplayError {
    /// The server refused part of the state (an error to pass on).
    Server(ClientError),
    Backend(BackendError),
}

impl From<BackendError> for ReplayError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Server {
                code,
                state,
                message,
                ..
            } => ReplayError::Server(ClientError::new(code, state, message)),
            other => ReplayError::Backend(other),
        }
    }
}

impl SessionState {
    pub fn in_transaction(&self) -> bool {
        self.status & status::IN_TRANS != 0
    }

    /// Whether the server connection may serve another session once this
    /// one lets it go. Not after an open transaction (an `XA PREPARE`d one
    /// survives a reset and would hold the next session), nor once the
    /// session turned `profiling` on: MariaDB keeps `SHOW PROFILES` history,
    /// statement texts included, across COM_RESET_CONNECTION and
    /// COM_CHANGE_USER, so the next client could read this one's statements.
    pub fn connection_reusable(&self) -> bool {
        !self.in_transaction() && !self.vars.iter().any(|(k, _)| k == "profiling")
    }

    /// State that ties the session to its current server connection beyond
    /// a transaction.
    pub fn pinned(&self) -> bool {
        !self.open_cursors.is_empty() || !self.long_data.is_empty()
    }

    pub fn next_statement_id(&mut self) -> u32 {
        // Never 0, never LAST_PREPARED: after LAST_PREPARED - 1 comes 1.
        let next = self.next_stmt.wrapping_add(1);
        self.next_stmt = if next == 0 || next == LAST_PREPARED {
            1
        } else {
            next
        };
        self.next_stmt
    }

    /// A statement command's id, with [`LAST_PREPARED`] replaced by the
    /// statement prepared last (in `payload` too); left as it is when
    /// there is none, so the command meets "unknown statement".
    pub fn resolve_last_prepared(&self, id: u32, payload: &mut [u8]) -> u32 {
        match (id, self.last_prepared) {
            (LAST_PREPARED, Some(last)) => {
                if let Some(at) = payload.get_mut(1..5) {
                    at.copy_from_slice(&last.to_le_bytes());
                }
                last
            }
            _ => id,
        }
    }

    /// Forgets what lived only on the server connection that was lost.
    pub fn forget_server_side(&mut self) {
        self.status &= !(status::IN_TRANS | status::IN_TRANS_READONLY);
        self.open_cursors.clear();
        self.long_data.clear();
    }

    /// COM_RESET_CONNECTION: back to a fresh session, same schema, whose
    /// status flags are `fresh` (the server's for a new session).
    pub fn reset(&mut self, fresh: u16) {
        let schema = self.schema.take();
        *self = Self {
            schema,
            status: fresh,
            ..Self::default()
        };
    }

    /// Keeps a `SET`'s assignments for replay. Returns the user variables
    /// whose values must be read back (see [`Assignment::capture`]), as
    /// `(key, variable as written)`; until [`Self::captured`] gives their
    /// values, they are kept as text.
    pub fn record_set(&mut self, effect: SetEffect) -> Vec<(String, Vec<u8>)> {
        let SetEffect::Session(assignments) = effect else {
            return Vec::new();
        };
        let mut captures = Vec::new();
        for Assignment { key, text, capture } in assignments {
            self.vars.retain(|(k, _)| *k != key);
            captures.retain(|(k, _)| *k != key);
            if let Some(var) = capture {
                captures.push((key.clone(), var));
            }
            self.vars.push((key, text));
        }
        captures
    }

    /// The values read back for `captures` (`SELECT` of each variable, in
    /// order): each is replayed as `@v = <its value as a literal>`. A
    /// variable whose value could not be read is not replayed at all:
    /// better unset than set by running its expression a second time.
    pub fn captured(&mut self, captures: &[(String, Vec<u8>)], read: Option<&Outcome>) {
        let values = read.and_then(|o| Some((o.first_row_values()?, &o.columns)));
        for (i, (key, var)) in captures.iter().enumerate() {
            let literal = values
                .as_ref()
                .and_then(|(vals, types)| value_literal(*vals.get(i)?, *types.get(i)?));
            let Some(slot) = self.vars.iter_mut().find(|(k, _)| k == key) else {
                continue;
            };
            match literal {
                Some(lit) => {
                    let mut text = var.clone();
                    text.extend_from_slice(b" = ");
                    text.extend_from_slice(&lit);
                    slot.1 = text;
                }
                None => {
                    tracing::warn!(variable = %key, "its value could not be read back: it will not be replayed");
                    self.vars.retain(|(k, _)| k != key);
                }
            }
        }
    }

    /// Puts this state on a fresh (reset) server connection.
    pub async fn replay(&mut self, conn: &mut BackendConn) -> Result<(), ReplayError> {
        if let Some(db) = &self.schema {
            let out = conn.init_db(db).await?;
            if let Some(e) = out.error {
                return Err(ReplayError::Server(ClientError::from_server(e)));
            }
        }
        if let Some(on) = self.multi_statements {
            let opt: u16 = if on { 0 } else { 1 };
            let mut p = vec![cmd::SET_OPTION];
            p.extend_from_slice(&opt.to_le_bytes());
            conn.command(ResponseKind::Single, &p).await?;
        }
        for (_, text) in &self.vars {
            let mut sql = b"SET ".to_vec();
            sql.extend_from_slice(text);
            let mut p = vec![cmd::QUERY];
            p.extend_from_slice(&sql);
            let out = conn.command(ResponseKind::Query, &p).await?;
            if let Some(e) = out.error {
                tracing::warn!(code = e.code, message = %e.message, "replaying a SET failed; continuing");
            }
        }
        // The session keeps the autocommit it had (or was told at login)
        // whatever the new server's global default: a session moved to a
        // server with `autocommit=0` would otherwise leave every later
        // write in a transaction its client never commits.
        let want = self.status & status::AUTOCOMMIT;
        if conn.status & status::AUTOCOMMIT != want {
            conn.execute(if want == 0 {
                "SET autocommit=0"
            } else {
                "SET autocommit=1"
            })
            .await?;
        }
        for stmt in self.stmts.values_mut() {
            let mut p = vec![cmd::STMT_PREPARE];
            p.extend_from_slice(&stmt.sql);
            let out = conn.command(ResponseKind::Prepare, &p).await?;
            stmt.backend_id = out.prepare.map(|ok| ok.statement_id);
            stmt.types_needed = stmt.params > 0;
        }
        Ok(())
    }
}

/// A value of a result column as an SQL literal of the same type:
/// integers and decimals as they are, floating point with an exponent (so
/// it stays a double), strings in hex, binary ones bare and the others with
/// their character set and collation (`_gbk X'…' COLLATE gbk_chinese_ci`):
/// no byte of the value is ever read as SQL, whatever the character set.
/// `None` for a value that does not look like its type, or a collation
/// this proxy does not know.
pub(crate) fn value_literal(value: Option<&[u8]>, ty: ColumnType) -> Option<Vec<u8>> {
    use mysql_common::collations::{Collation, CollationId};
    const DECIMAL: u8 = 0x00;
    const FLOAT: u8 = 0x04;
    const DOUBLE: u8 = 0x05;
    const NEWDECIMAL: u8 = 0xf6;
    const BINARY: u16 = 63;
    let Some(v) = value else {
        return Some(b"NULL".to_vec());
    };
    let number =
        |extra: &[u8]| !v.is_empty() && v.iter().all(|c| c.is_ascii_digit() || extra.contains(c));
    let hex = |lit: &mut Vec<u8>| {
        lit.extend_from_slice(b"X'");
        for b in v {
            lit.extend_from_slice(format!("{b:02X}").as_bytes());
        }
        lit.push(b'\'');
    };
    match ty.kind {
        0x01..=0x03 | 0x08 | 0x09 if number(b"-") => Some(v.to_vec()),
        DECIMAL | NEWDECIMAL if number(b"-.") => Some(v.to_vec()),
        FLOAT | DOUBLE if number(b"-.eE+") => {
            let mut lit = v.to_vec();
            if !v.iter().any(|c| matches!(c, b'e' | b'E')) {
                lit.extend_from_slice(b"E0");
            }
            Some(lit)
        }
        0x01..=0x09 | DECIMAL | NEWDECIMAL => None,
        _ if ty.charset == BINARY => {
            let mut lit = Vec::with_capacity(v.len() * 2 + 3);
            hex(&mut lit);
            Some(lit)
        }
        _ => {
            let c = Collation::resolve(CollationId::from(ty.charset));
            if c.id() == CollationId::UNKNOWN_COLLATION_ID {
                return None;
            }
            let mut lit = format!("_{} ", c.charset()).into_bytes();
            hex(&mut lit);
            lit.extend_from_slice(format!(" COLLATE {}", c.collation()).as_bytes());
            Some(lit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(id: u32, nparams: usize, bound: bool, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![cmd::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend(std::iter::repeat_n(0u8, nparams.div_ceil(8)));
        p.push(u8::from(bound));
        if bound {
            p.extend_from_slice(types);
        }
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn types_are_added_after_a_move() {
        let mut s = Stmt {
            sql: b"SELECT ?, ?".to_vec(),
            backend_id: Some(1),
            params: 2,
            types: None,
            types_needed: false,
        };
        let first = execute(1, 2, true, &[8, 0, 253, 0], b"VALUES");
        assert_eq!(s.bind_types(first.clone()).unwrap(), first);
        let later = execute(1, 2, false, &[], b"VALUES");
        assert_eq!(
            s.bind_types(later.clone()).unwrap(),
            later,
            "same server: unchanged"
        );
        s.types_needed = true;
        assert_eq!(
            s.bind_types(later).unwrap(),
            first,
            "after a move the types come back"
        );
        assert!(!s.types_needed);
    }

    #[test]
    fn bulk_types_are_kept_and_added_after_a_move() {
        let mut s = Stmt {
            sql: b"INSERT INTO t VALUES (?, ?)".to_vec(),
            backend_id: Some(1),
            params: 2,
            types: None,
            types_needed: false,
        };
        let bulk = |flags: u16, types: &[u8]| {
            let mut p = vec![cmd::STMT_BULK_EXECUTE, 1, 0, 0, 0];
            p.extend_from_slice(&flags.to_le_bytes());
            p.extend_from_slice(types);
            p.extend_from_slice(b"ROWS");
            p
        };
        let first = bulk(128, &[8, 0, 253, 0]);
        assert_eq!(s.bind_bulk_types(first.clone()).unwrap(), first);
        let later = bulk(0, &[]);
        assert_eq!(s.bind_bulk_types(later.clone()).unwrap(), later);
        s.types_needed = true;
        assert_eq!(
            s.bind_bulk_types(later).unwrap(),
            first,
            "types after a move"
        );
        assert!(s
            .bind_bulk_types(vec![cmd::STMT_BULK_EXECUTE, 1, 0, 0, 0, 128])
            .is_none());
    }

    #[test]
    fn the_last_prepared_id_names_the_statement_prepared_last() {
        let mut st = SessionState::default();
        let mut exec = vec![cmd::STMT_EXECUTE, 0xff, 0xff, 0xff, 0xff, 0];
        assert_eq!(
            st.resolve_last_prepared(LAST_PREPARED, &mut exec),
            LAST_PREPARED
        );
        let id = st.next_statement_id();
        st.last_prepared = Some(id);
        assert_eq!(st.resolve_last_prepared(LAST_PREPARED, &mut exec), id);
        assert_eq!(exec[1..5], id.to_le_bytes(), "the payload names it too");
        assert_eq!(st.resolve_last_prepared(7, &mut exec), 7, "other ids stay");
        st.next_stmt = LAST_PREPARED - 2;
        assert_eq!(st.next_statement_id(), LAST_PREPARED - 1);
        assert_eq!(st.next_statement_id(), 1, "never LAST_PREPARED, never 0");
    }

    #[test]
    fn short_execute_is_malformed() {
        let mut s = Stmt {
            sql: Vec::new(),
            backend_id: Some(1),
            params: 9,
            types: None,
            types_needed: false,
        };
        assert!(s.bind_types(vec![cmd::STMT_EXECUTE, 1, 0, 0, 0]).is_none());
    }

    fn column(kind: u8, charset: u16) -> ColumnType {
        ColumnType { charset, kind }
    }

    #[test]
    fn values_become_literals_of_their_type() {
        let lit = |v: Option<&[u8]>, kind, charset| {
            value_literal(v, column(kind, charset)).map(|l| String::from_utf8(l).unwrap())
        };
        assert_eq!(lit(None, 0xfd, 33).as_deref(), Some("NULL"));
        assert_eq!(lit(Some(b"-42"), 0x08, 63).as_deref(), Some("-42"));
        assert_eq!(lit(Some(b"3.50"), 0xf6, 63).as_deref(), Some("3.50"));
        assert_eq!(lit(Some(b"1.5"), 0x05, 63).as_deref(), Some("1.5E0"));
        assert_eq!(lit(Some(b"1e300"), 0x05, 63).as_deref(), Some("1e300"));
        assert_eq!(
            lit(Some(b"it's \\"), 0xfd, 45).as_deref(),
            Some("_utf8mb4 X'69742773205C' COLLATE utf8mb4_general_ci")
        );
        // gbk: 0xBF5C is one character whose second byte is a backslash;
        // quoted and escaped byte by byte it would end the string early.
        assert_eq!(
            lit(Some(b"\xbf\x5c'; DROP TABLE t; --"), 0xfd, 28).as_deref(),
            Some("_gbk X'BF5C273B2044524F50205441424C4520743B202D2D' COLLATE gbk_chinese_ci")
        );
        assert_eq!(lit(Some(b"x"), 0xfd, 4000), None, "an unknown collation");
        assert_eq!(lit(Some(b"\x00\xff"), 0xfc, 63).as_deref(), Some("X'00FF'"));
        assert_eq!(lit(Some(b"1; DROP"), 0x08, 63), None, "not an integer");
    }

    #[test]
    fn captured_values_replace_expressions() {
        let mut st = SessionState::default();
        let caps = st.record_set(crate::sql::parse_set(b"SET @id = LAST_INSERT_ID(), @k = 1"));
        assert_eq!(caps, [("@id".to_string(), b"@id".to_vec())]);
        let read = Outcome {
            first_row: Some(b"\x0212".to_vec()),
            columns: vec![column(0x08, 63)],
            ..Default::default()
        };
        st.captured(&caps, Some(&read));
        let vars: Vec<_> = st
            .vars
            .iter()
            .map(|(k, t)| (k.as_str(), String::from_utf8_lossy(t).into_owned()))
            .collect();
        assert_eq!(vars, [("@id", "@id = 12".into()), ("@k", "@k = 1".into())]);
        // Not read back: not replayed at all.
        let caps = st.record_set(crate::sql::parse_set(b"SET @id = NEXTVAL(s)"));
        st.captured(&caps, None);
        assert!(st.vars.iter().all(|(k, _)| k != "@id"));
    }

    #[test]
    fn later_set_replaces_earlier() {
        let mut st = SessionState::default();
        st.record_set(crate::sql::parse_set(b"SET sql_mode='A', @x=1"));
        st.record_set(crate::sql::parse_set(b"SET SESSION sql_mode='B'"));
        let keys: Vec<_> = st.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["@x", "sql_mode"]);
        assert_eq!(st.vars[1].1, b"SESSION sql_mode='B'".to_vec());
    }
}
