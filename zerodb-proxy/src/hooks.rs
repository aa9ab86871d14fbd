//! Extension points for embedders.

use crate::errors::ClientError;

/// What the session knows that a hook may use.
#[derive(Debug, Clone, Copy)]
pub struct StatementContext<'a> {
    /// The session's connection id (the one its client sees in the
    /// greeting and `CONNECTION_ID()`).
    pub connection_id: u32,
    /// The user the client logged in as.
    pub user: &'a str,
    /// The current database, as the client sent it; `None` before any.
    pub schema: Option<&'a [u8]>,
    /// The name of the dataHost the statement goes to.
    pub datahost: &'a str,
}

/// Called for every statement text a client sends (COM_QUERY and
/// COM_STMT_PREPARE) before it goes to a backend.
pub trait StatementHook: Send + Sync + 'static {
    /// `Ok(())` lets the statement through; `Err` answers the client with
    /// that error instead, and nothing reaches the backend.
    fn check(&self, ctx: &StatementContext<'_>, sql: &[u8]) -> Result<(), ClientError>;
}
