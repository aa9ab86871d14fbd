//! `KILL` in proxy connection ids: the proxy finds the session and ends
//! its backend statement or connection itself.

use super::{Fail, Session};
use crate::backend::{BackendConn, BackendError};
use crate::errors::ClientError;
use crate::protocol::{cmd, ResponseKind};
use crate::sql;

impl Session {
    /// `KILL …` in the proxy's ids, from a query or a prepared statement.
    /// Boxed where it is called, like [`Self::rebind`] and for the same
    /// reason: its future is the largest of any command's (it may evaluate
    /// the target on the server and connect to send the KILL), so inline
    /// it made a session's state 800 bytes larger.
    pub(super) async fn kill_statement(
        &mut self,
        k: Result<sql::Kill<'_>, ()>,
    ) -> Result<(), Fail> {
        let k = k.map_err(|()| {
            ClientError::new(
                1235,
                "42000",
                "zeroDB supports KILL [CONNECTION|QUERY] <connection id expression> only",
            )
        })?;
        let id = match k.target {
            sql::KillTarget::Id(id) => id,
            sql::KillTarget::Expr(e) => self.kill_target(e).await?,
        };
        self.kill(id, k.query_only).await
    }

    /// COM_STMT_PREPARE of a KILL: its ids are the proxy's, so the proxy
    /// keeps the statement and runs it itself at each execution, as it runs
    /// a KILL query; no server sees it. One with parameters (`KILL ?`) is
    /// refused with 1295, which clients take as "send it as a query".
    pub(super) async fn prepare_kill(&mut self, text: Vec<u8>) -> Result<(), Fail> {
        if text.contains(&b'?') {
            return Err(ClientError::new(
                1295,
                "HY000",
                "This command is not supported in the prepared statement protocol yet",
            )
            .into());
        }
        let id = self.st.next_statement_id();
        self.st.kills.insert(id, text);
        self.st.last_prepared = Some(id);
        // PREPARE_OK: no columns, no parameters, no warnings.
        let mut ok = vec![0x00];
        ok.extend_from_slice(&id.to_le_bytes());
        ok.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        self.answer(&ok).await
    }

    /// The connection id a `KILL <expression>` names: the server evaluates
    /// the expression in the session (its user variables, its
    /// `CONNECTION_ID()`) as an integer, as its own KILL would.
    pub(super) async fn kill_target(&mut self, expr: &[u8]) -> Result<u64, Fail> {
        if sql::kill_target_uses_tables(expr) {
            return Err(ClientError::new(
                1970,
                "42000",
                "KILL does not support subqueries or stored functions",
            )
            .into());
        }
        let expr = sql::rewrite_connection_id(expr, self.id()).unwrap_or_else(|| expr.to_vec());
        let mut q = vec![cmd::QUERY];
        q.extend_from_slice(b"SELECT CAST((");
        q.extend_from_slice(&expr);
        q.extend_from_slice(b") AS UNSIGNED)");
        self.ensure_backend().await?;
        let Some(b) = self.backend.as_mut() else {
            return Err(ClientError::no_datasource(&self.datahost.name, "?", "not bound").into());
        };
        match b.conn.command(ResponseKind::Query, &q).await {
            Ok(out) => {
                // A SELECT can open a transaction (autocommit off).
                if let Some(s) = out.status {
                    self.st.status = s;
                }
                if let Some(e) = out.error {
                    return Err(ClientError::from_server(e).into());
                }
                // NULL, as on the server, is thread 0.
                Ok(out
                    .first_value()
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0))
            }
            Err(e) => {
                let name = b.ds.name.clone();
                self.lose_backend(e.to_string());
                Err(ClientError::backend_lost(&name, &e.to_string()).into())
            }
        }
    }

    /// `KILL [QUERY] id` and COM_PROCESS_KILL, in the proxy's ids.
    pub(super) async fn kill(&mut self, target: u64, query_only: bool) -> Result<(), Fail> {
        let h = u32::try_from(target)
            .ok()
            .and_then(|t| self.shared.registry.get(t))
            .ok_or_else(|| ClientError::unknown_thread(target))?;
        if h.user() != self.user {
            return Err(ClientError::not_owner(target).into());
        }
        if !query_only {
            // Marked first: the session's statement, ended by the backend
            // KILL below, must end in "killed", not in "datasource lost".
            h.kill();
        }
        if let Some((ds, thread)) = h.backend() {
            let stmt = if query_only {
                format!("KILL QUERY {thread}")
            } else {
                format!("KILL {thread}")
            };
            let (params, key) = (ds.pool.params(), self.key);
            let sent = tokio::time::timeout(ds.pool.command_timeout(), async move {
                let mut c = BackendConn::connect(params, key).await?;
                c.execute(&stmt).await
            });
            match sent.await {
                Ok(Ok(_) | Err(BackendError::Server { code: 1094, .. })) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "KILL on the backend failed"),
                Err(_) => {
                    tracing::warn!(datasource = %ds.name, "KILL on the backend got no answer within pool.command_timeout")
                }
            }
        }
        if !query_only && h.id == self.id() {
            let _ = self.reply_err(ClientError::connection_killed()).await;
            return Err(Fail::Close);
        }
        self.reply_ok().await
    }
}
