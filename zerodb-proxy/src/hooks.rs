//! Extension points for embedders.

use crate::errors::ClientError;

/// What the session knows that a hook may use.
#[derive(Debug, Clone, Copy)]
pub struct StatementContext<'a> {
    pub connection_id: u32,
    pub user: &'a str,
    pub schema: Option<&'a [u8]>,
    pub datahost: &'a str,
}

/// Called for every statement text a client sends (COM_QUERY and
/// COM_STMT_PREPARE) before it goes to a backend.
pub trait StatementHook: Send + Sync + 'static {
    /// `Ok(())` lets the statement through; `Err` answers the client with
    /// that error instead, and nothing reaches the backend.
    fn check(&self, ctx: &StatementContext<'_>, sql: &[u8]) -> Result<(), ClientError>;
}
