//! Prepared statements: the client knows them by the proxy's ids, which
//! are mapped to the bound backend's at every execution.

use super::relay::Relayed;
use super::state::Stmt;
use super::{Fail, Session};
use crate::errors::ClientError;
use crate::protocol::packets::u32_at;
use crate::protocol::{cmd, status, ResponseKind};
use crate::sql;

impl Session {
    pub(super) async fn prepare(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        let text = &payload[1..];
        self.check_hooks(text)?;
        self.st.last_prepared = None;
        let limit = self.shared.limits.load().max_prepared_stmt_count;
        if self.st.stmts.len() + self.st.kills.len() >= limit {
            metrics::counter!("zerodb_limit_hits_total", "limit" => "max_prepared_stmt_count")
                .increment(1);
            return Err(ClientError::too_many_statements(limit).into());
        }
        if sql::first_keyword(text).starts_with(b"KILL\0") {
            return self.prepare_kill(text.to_vec()).await;
        }
        let sql_text = sql::rewrite_connection_id(text, self.id()).unwrap_or_else(|| text.to_vec());
        let mut req = Vec::with_capacity(sql_text.len() + 1);
        req.push(cmd::STMT_PREPARE);
        req.extend_from_slice(&sql_text);
        let client_id = self.st.next_statement_id();
        let r = self
            .forward(ResponseKind::Prepare, &req, Some(client_id))
            .await?;
        if let Some(ok) = r.prepare {
            self.st.stmts.insert(
                client_id,
                Stmt {
                    sql: sql_text,
                    backend_id: Some(ok.statement_id),
                    params: ok.params,
                    types: None,
                    types_needed: false,
                },
            );
            self.st.last_prepared = Some(client_id);
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_RESET,
    /// COM_STMT_BULK_EXECUTE.
    pub(super) async fn statement(
        &mut self,
        command: u8,
        mut payload: Vec<u8>,
    ) -> Result<(), Fail> {
        let what = cmd::name(command);
        let id = u32_at(&payload, 1).ok_or_else(|| ClientError::malformed(what))?;
        let id = self.st.resolve_last_prepared(id, &mut payload);
        if let Some(text) = self.st.kills.get(&id).cloned() {
            return match command {
                cmd::STMT_EXECUTE => match sql::parse_kill(&text, self.id().into()) {
                    Some(k) => Box::pin(self.kill_statement(k)).await,
                    None => Err(ClientError::unknown_statement(id, what).into()),
                },
                cmd::STMT_RESET => self.reply_ok().await,
                _ => Err(ClientError::new(
                    1421,
                    "HY000",
                    format!("The statement ({id}) has no open cursor."),
                )
                .into()),
            };
        }
        if !self.st.stmts.contains_key(&id) {
            return Err(ClientError::unknown_statement(id, what).into());
        }
        self.ensure_backend().await?;
        let (kind, payload) = self.statement_for_backend(command, id, payload)?;
        let r = self.forward_bound(kind, &payload, None).await?;
        self.statement_done(command, id, &r);
        Ok(())
    }

    /// Whether [`Self::statement`] for client statement `id` would go
    /// straight to the backend: a statement the session prepared (not a
    /// KILL the proxy runs itself), and a backend connection that is
    /// current.
    pub(super) fn statement_is_plain(&mut self, id: u32) -> bool {
        !self.st.kills.contains_key(&id)
            && self.st.stmts.contains_key(&id)
            && self.backend_is_current()
    }

    /// The command a prepared statement's COM_STMT_EXECUTE, _FETCH or
    /// _RESET becomes on the bound backend: its statement id there, and for
    /// an execution the parameter types the backend has not seen yet.
    pub(super) fn statement_for_backend(
        &mut self,
        command: u8,
        id: u32,
        mut payload: Vec<u8>,
    ) -> Result<(ResponseKind, Vec<u8>), Fail> {
        let what = cmd::name(command);
        let stmt = self
            .st
            .stmts
            .get_mut(&id)
            .ok_or_else(|| ClientError::unknown_statement(id, what))?;
        let backend_id = stmt.backend_id.ok_or_else(|| {
            ClientError::state_lost(&format!(
                "statement {id} could not be prepared again after a datasource switch"
            ))
        })?;
        payload[1..5].copy_from_slice(&backend_id.to_le_bytes());
        let kind = match command {
            cmd::STMT_EXECUTE => {
                payload = stmt
                    .bind_types(payload)
                    .ok_or_else(|| ClientError::malformed(what))?;
                // Flags byte: 0 is no cursor; any cursor type asks for one.
                ResponseKind::Execute {
                    cursor: payload.get(5).is_some_and(|f| *f != 0),
                }
            }
            cmd::STMT_BULK_EXECUTE => {
                payload = stmt
                    .bind_bulk_types(payload)
                    .ok_or_else(|| ClientError::malformed(what))?;
                ResponseKind::Execute { cursor: false }
            }
            cmd::STMT_FETCH => ResponseKind::Fetch,
            _ => ResponseKind::Single,
        };
        Ok((kind, payload))
    }

    /// What a relayed COM_STMT_EXECUTE, _FETCH or _RESET leaves behind: a
    /// cursor opened or closed, long data used up.
    pub(super) fn statement_done(&mut self, command: u8, id: u32, r: &Relayed) {
        let cursor_open = r.status.is_some_and(|s| s & status::CURSOR_EXISTS != 0)
            && r.status.is_some_and(|s| s & status::LAST_ROW_SENT == 0);
        // (Most sessions never use either set: skip hashing the id.)
        if !self.st.long_data.is_empty() {
            self.st.long_data.remove(&id);
        }
        if command == cmd::STMT_RESET || !cursor_open || r.error {
            if !self.st.open_cursors.is_empty() {
                self.st.open_cursors.remove(&id);
            }
        } else if command == cmd::STMT_EXECUTE {
            self.st.open_cursors.insert(id);
        }
    }

    /// COM_STMT_SEND_LONG_DATA and COM_STMT_CLOSE: no response, ever.
    pub(super) async fn statement_no_reply(
        &mut self,
        command: u8,
        mut payload: Vec<u8>,
    ) -> Result<(), Fail> {
        let Some(id) = u32_at(&payload, 1) else {
            return Ok(());
        };
        let id = self.st.resolve_last_prepared(id, &mut payload);
        if command == cmd::STMT_CLOSE && self.st.kills.remove(&id).is_some() {
            return Ok(());
        }
        let Some(stmt) = self.st.stmts.get(&id) else {
            return Ok(());
        };
        let backend_id = stmt.backend_id;
        if command == cmd::STMT_CLOSE {
            self.st.stmts.remove(&id);
            self.st.open_cursors.remove(&id);
            self.st.long_data.remove(&id);
            if self.backend.is_none() {
                return Ok(());
            }
        } else {
            if self.ensure_backend().await.is_err() {
                // The EXECUTE that follows reports the problem.
                return Ok(());
            }
            self.st.long_data.insert(id);
        }
        let (Some(b), Some(backend_id)) = (self.backend.as_mut(), backend_id) else {
            return Ok(());
        };
        payload[1..5].copy_from_slice(&backend_id.to_le_bytes());
        if b.conn.conn.send(0, &payload).await.is_err() {
            self.lose_backend("the connection to the datasource was lost".into());
        }
        Ok(())
    }
}
