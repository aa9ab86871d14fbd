//! Sending a command to the bound backend and relaying its response.

use super::relay::{relay, RelayError, Relayed};
use super::stats::StatementMetrics;
use super::{Fail, Session};
use crate::backend::BackendError;
use crate::errors::ClientError;
use crate::protocol::ResponseKind;

impl Session {
    /// Sends one command to the backend (bound first, moved if need be)
    /// and relays the response.
    pub(super) async fn forward(
        &mut self,
        kind: ResponseKind,
        payload: &[u8],
        prepare_id: Option<u32>,
    ) -> Result<Relayed, Fail> {
        // [`Self::ensure_backend`] spelled out: every text statement comes
        // this way, and awaiting that would set up one more future each.
        if !self.backend_is_current() {
            Box::pin(self.rebind()).await?;
        }
        self.forward_bound(kind, payload, prepare_id).await
    }

    /// [`Self::forward`] on the backend the session is bound to now (for a
    /// command whose payload names things of that backend's, such as a
    /// statement id: binding again could move it to another one).
    #[expect(
        clippy::too_many_lines,
        reason = "every statement runs it: one future, the send without a future of its own when the socket takes it; splitting adds nested futures per statement"
    )]
    pub(super) async fn forward_bound(
        &mut self,
        kind: ResponseKind,
        payload: &[u8],
        prepare_id: Option<u32>,
    ) -> Result<Relayed, Fail> {
        let seq_before = self.seq;
        let Some(b) = self.backend.as_mut() else {
            return Err(ClientError::no_datasource(&self.datahost.name, "?", "not bound").into());
        };
        // Sent without a future of its own when the socket takes it all.
        b.conn.conn.queue(0, payload);
        let sent = match b.conn.conn.try_flush() {
            Ok(true) => Ok(()),
            Ok(false) => b.conn.conn.flush().await,
            Err(e) => Err(e),
        };
        let out = match sent {
            Ok(_) => {
                relay(
                    &mut self.client,
                    &mut self.seq,
                    &mut b.conn,
                    (&self.handle, &b.ds.health),
                    kind,
                    prepare_id,
                    self.shared.config.max_allowed_packet,
                )
                .await
            }
            Err(e) => Err(RelayError::Backend {
                error: BackendError::Lost {
                    addr: b.conn.addr.clone(),
                    reason: e.to_string(),
                },
                mid_packet: false,
                // A command not sent whole cannot run.
                unread: true,
            }),
        };
        match out {
            Ok(r) => {
                if let Some(s) = r.status {
                    self.st.status = s;
                }
                StatementMetrics::with(|m| m.statement(r.error));
                Ok(r)
            }
            Err(RelayError::Client) => {
                if let Some(b) = self.backend.as_mut() {
                    b.conn.broken = true;
                }
                Err(Fail::Close)
            }
            Err(RelayError::Backend {
                error,
                mid_packet,
                unread,
            }) => {
                let name = self
                    .backend
                    .as_ref()
                    .map(|b| b.ds.name.clone())
                    .unwrap_or_default();
                let killed = self.handle.is_killed();
                if !killed {
                    tracing::warn!(session = self.id(), datasource = %name, error = %error, "backend lost mid-statement");
                }
                let in_trans = self.st.in_transaction();
                self.lose_backend(format!("the connection to datasource '{name}' was lost"));
                if mid_packet {
                    // The client holds half a packet: nothing valid can follow.
                    return Err(Fail::Close);
                }
                if killed {
                    // `KILL` of this session ended its backend connection
                    // first: the client learns why, as from MySQL.
                    let _ = self.reply_err(ClientError::connection_killed()).await;
                    return Err(Fail::Close);
                }
                if in_trans {
                    return Err(ClientError::transaction_lost(&format!(
                        "the connection to datasource '{name}' was lost ({error})"
                    ))
                    .into());
                }
                let e = ClientError::backend_lost(&name, &error.to_string());
                if self.seq == seq_before && unread {
                    Err(Fail::NotReceived(e))
                } else if self.seq == seq_before {
                    Err(Fail::Unanswered(e))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    // ----- commands --------------------------------------------------------
}
