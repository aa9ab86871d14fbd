//! Text commands the session looks at: COM_QUERY (with `USE`, `KILL`,
//! `SET` kept for replay, and retries of what is safe to run again),
//! COM_PING, COM_INIT_DB, COM_SET_OPTION, COM_RESET_CONNECTION.

use super::{Fail, Session};
use crate::errors::ClientError;
use crate::protocol::{cmd, packets, status, ResponseKind};
use crate::sql;
use std::sync::Arc;

impl Session {
    pub(super) async fn query(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        let sql_text = &payload[1..];
        self.notice_switch_in_transaction();
        if self.st.doomed.is_some() {
            if sql::starts_with_keyword(sql_text, "ROLLBACK") {
                self.st.doomed = None;
                self.st.status &= !status::IN_TRANS;
                return self.reply_ok().await;
            }
            if sql::starts_with_keyword(sql_text, "COMMIT") {
                let why = self.st.doomed.take().unwrap_or_default();
                self.st.status &= !status::IN_TRANS;
                return Err(ClientError::transaction_lost(&why).into());
            }
        }
        self.check_hooks(sql_text)?;
        let kw = sql::first_keyword(sql_text);
        match &kw[..] {
            [b'K', b'I', b'L', b'L', 0, ..] => {
                if let Some(k) = sql::parse_kill(sql_text, self.id().into()) {
                    return Box::pin(self.kill_statement(k)).await;
                }
            }
            [b'U', b'S', b'E', 0, ..] => {
                if let Some(db) = sql::parse_use(sql_text) {
                    return self.change_schema(db, ResponseKind::Query, &payload).await;
                }
            }
            _ => {}
        }
        if kw.starts_with(b"SET\0") {
            self.check_session_vars(sql_text)?;
        }
        let rewritten = sql::rewrite_connection_id(sql_text, self.id()).map(|mut q| {
            q.insert(0, cmd::QUERY);
            q
        });
        let statement = rewritten.as_deref().unwrap_or(&payload);
        let mut r = self.forward(ResponseKind::Query, statement, None).await;
        let retry = match &r {
            // The server never read it (and the transaction, if any, is
            // gone anyway: `forward` answered that with 9103).
            Err(Fail::NotReceived(_)) => Some("statement never received"),
            Err(Fail::Unanswered(_)) if self.safe_to_retry(sql_text) => Some("read unanswered"),
            _ => None,
        };
        if let Some(why) = retry {
            // Run it again, on the new active datasource once there is one.
            metrics::counter!("zerodb_statements_retried_total").increment(1);
            tracing::info!(
                session = self.id(),
                why,
                "statement retried after its datasource was lost"
            );
            r = self.forward(ResponseKind::Query, statement, None).await;
        }
        let r = r?;
        if !r.error && (kw.starts_with(b"SET\0") || sql_text.contains(&b';')) {
            self.record_sets(sql_text).await;
        }
        Ok(())
    }

    /// Refuses a `SET` that would take the session past
    /// `limits.max_session_vars` distinct assignments kept for replay,
    /// before it runs (once run, it could not be replayed).
    fn check_session_vars(&self, sql_text: &[u8]) -> Result<(), ClientError> {
        let limit = self.shared.limits.load().max_session_vars;
        let mut new: Vec<String> = Vec::new();
        for set in sql::session_sets(sql_text) {
            if let sql::SetEffect::Session(assignments) = sql::parse_set(set) {
                for a in assignments {
                    if !new.contains(&a.key) && !self.st.vars.iter().any(|(k, _)| *k == a.key) {
                        new.push(a.key);
                    }
                }
            }
        }
        if new.is_empty() || self.st.vars.len() + new.len() <= limit {
            return Ok(());
        }
        metrics::counter!("zerodb_limit_hits_total", "limit" => "max_session_vars").increment(1);
        Err(ClientError::session_limit(
            "no more session variables can be set",
            "max_session_vars",
            limit,
        ))
    }

    /// Keeps what the `SET`s of a statement text did to the session, for
    /// replay, and reads back the values of user variables set from
    /// expressions (one `SELECT` on the same connection, only when there
    /// are some).
    pub(super) async fn record_sets(&mut self, sql_text: &[u8]) {
        let mut captures: Vec<(String, Vec<u8>)> = Vec::new();
        for set in sql::session_sets(sql_text) {
            for c in self.st.record_set(sql::parse_set(set)) {
                captures.retain(|(k, _)| *k != c.0);
                captures.push(c);
            }
        }
        if captures.is_empty() {
            return;
        }
        let mut select = vec![cmd::QUERY];
        select.extend_from_slice(b"SELECT ");
        for (i, (_, var)) in captures.iter().enumerate() {
            if i > 0 {
                select.extend_from_slice(b", ");
            }
            select.extend_from_slice(var);
        }
        let read = match self.backend.as_mut() {
            Some(b) => b.conn.command(ResponseKind::Query, &select).await,
            None => {
                self.st.captured(&captures, None);
                return;
            }
        };
        match read {
            Ok(out) if out.error.is_none() => self.st.captured(&captures, Some(&out)),
            Ok(_) => self.st.captured(&captures, None),
            Err(e) => {
                self.st.captured(&captures, None);
                self.lose_backend(format!("reading back session variables failed: {e}"));
            }
        }
    }

    /// A statement that can run twice with the same effect: a read,
    /// outside a transaction, alone (no multi-statement text).
    pub(super) fn safe_to_retry(&self, sql_text: &[u8]) -> bool {
        let kw = sql::first_keyword(sql_text);
        let read = ["SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"]
            .iter()
            .any(|k| kw.starts_with(k.as_bytes()) && kw.get(k.len()) == Some(&0));
        let locking = [
            "FOR",
            "INTO",
            "LOCK",
            "GET_LOCK",
            "RELEASE_LOCK",
            "NEXTVAL",
            "SETVAL",
        ]
        .iter()
        .any(|k| sql::contains_keyword(sql_text, k));
        read && !locking && !self.st.in_transaction() && !sql_text.contains(&b';')
    }

    pub(super) async fn ping(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        if self.backend.is_some() && self.st.doomed.is_none() {
            self.forward(ResponseKind::Single, &payload, None)
                .await
                .map(drop)
        } else {
            self.reply_ok().await
        }
    }

    /// COM_INIT_DB or `USE db`: follows the schema to its dataHost.
    pub(super) async fn change_schema(
        &mut self,
        db: Vec<u8>,
        kind: ResponseKind,
        payload: &[u8],
    ) -> Result<(), Fail> {
        let target = self.shared.topology.route(Some(&db)).clone();
        if !Arc::ptr_eq(&target, &self.datahost) {
            if self.st.in_transaction() {
                return Err(
                    ClientError::cross_datahost_in_transaction(&String::from_utf8_lossy(&db))
                        .into(),
                );
            }
            self.release_backend();
            self.st.schema = None;
            self.st.forget_server_side();
            self.datahost = target;
        }
        let r = self.forward(kind, payload, None).await?;
        if !r.error {
            self.st.schema = Some(db);
        }
        Ok(())
    }

    pub(super) async fn set_option(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        let r = self.forward(ResponseKind::Single, &payload, None).await?;
        if !r.error {
            if let Some(o) = packets::u16_at(&payload, 1) {
                self.st.multi_statements = Some(o == 0);
            }
        }
        Ok(())
    }

    pub(super) async fn reset_connection(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        if self.backend.is_none() || self.st.doomed.is_some() {
            self.st.reset(self.fresh_status());
            return self.reply_ok().await;
        }
        let r = self.forward(ResponseKind::Single, &payload, None).await?;
        if !r.error {
            // The server's OK said what its fresh session has.
            self.st.reset(self.st.status & status::OF_A_FRESH_SESSION);
        }
        Ok(())
    }
}
