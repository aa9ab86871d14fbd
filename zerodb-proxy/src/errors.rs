//! The MySQL errors the proxy itself answers with.
//!
//! Where MySQL has an error for the situation its code is used, so drivers
//! react as they would to a server. Situations only a proxy meets use codes
//! in the 9100 range (ProxySQL likewise answers with its own 9xxx codes).

use std::borrow::Cow;

/// An error sent to a client as an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// The MySQL error code.
    pub code: u16,
    /// The five-character SQLSTATE.
    pub state: Cow<'static, str>,
    /// The human-readable message.
    pub message: String,
}

impl ClientError {
    /// An error with the given code, SQLSTATE and message.
    pub fn new(code: u16, state: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code,
            state: state.into(),
            message: message.into(),
        }
    }

    /// A server's error, passed on as the server sent it.
    pub fn from_server(e: crate::protocol::packets::ErrPacket) -> Self {
        Self::new(e.code, e.state, e.message)
    }

    /// The ERR packet payload that carries this error.
    pub fn packet(&self) -> Vec<u8> {
        crate::protocol::packets::err(self.code, &self.state, &self.message)
    }

    /// The session was ended by `KILL` (MySQL's ER_CONNECTION_KILLED).
    pub fn connection_killed() -> Self {
        Self::new(1927, "70100", "Connection was killed")
    }

    /// The client's address made too many failed logins in a row (MariaDB's
    /// ER_HOST_IS_BLOCKED, 1129).
    pub fn host_blocked(host: &str) -> Self {
        Self::new(
            1129,
            "HY000",
            format!("Host '{host}' is blocked because of many connection errors; it is released after limits.host_block_time"),
        )
    }

    /// A session idle for `limits.wait_timeout` is closed (MySQL's
    /// ER_CLIENT_INTERACTION_TIMEOUT, 4031).
    pub fn idle_timeout() -> Self {
        Self::new(
            4031,
            "HY000",
            "The client was disconnected by the server because of inactivity. See limits.wait_timeout",
        )
    }

    /// The client's credentials were refused (MySQL's ER_ACCESS_DENIED_ERROR,
    /// 1045); `with_password` says whether it sent a password.
    pub fn access_denied(user: &str, host: &str, with_password: bool) -> Self {
        let using = if with_password { "YES" } else { "NO" };
        Self::new(
            1045,
            "28000",
            format!("Access denied for user '{user}'@'{host}' (using password: {using})"),
        )
    }

    /// The client sent a command the proxy does not relay (MySQL's
    /// ER_UNKNOWN_COM_ERROR, 1047), named from its command byte.
    pub fn unknown_command(cmd: u8) -> Self {
        Self::new(
            1047,
            "08S01",
            format!(
                "Unknown command: {} (0x{cmd:02x}) is not supported through zeroDB",
                crate::protocol::cmd::name(cmd)
            ),
        )
    }

    /// A prepared statement id the session does not know was given to `what`
    /// (MySQL's ER_UNKNOWN_STMT_HANDLER, 1243).
    pub fn unknown_statement(id: u32, what: &str) -> Self {
        Self::new(
            1243,
            "HY000",
            format!("Unknown prepared statement handler ({id}) given to {what}"),
        )
    }

    /// A client packet, described by `what`, could not be parsed (MySQL's
    /// ER_MALFORMED_PACKET, 1835).
    pub fn malformed(what: &str) -> Self {
        Self::new(
            1835,
            "08S01",
            format!("Malformed communication packet: {what}"),
        )
    }

    /// A packet's sequence id did not follow the one before it (MySQL's
    /// ER_NET_PACKETS_OUT_OF_ORDER, 1156).
    pub fn out_of_order() -> Self {
        Self::new(1156, "08S01", "Got packets out of order")
    }

    /// The proxy already holds `max_connections` client sessions (MySQL's
    /// ER_CON_COUNT_ERROR, 1040).
    pub fn too_many_connections() -> Self {
        Self::new(1040, "08004", "Too many connections")
    }

    /// A packet of `len` bytes exceeds the limit of `max` (MySQL's
    /// ER_NET_PACKET_TOO_LARGE, 1153).
    pub fn packet_too_large(len: usize, max: usize) -> Self {
        Self::new(
            1153,
            "08S01",
            format!("Got a packet bigger than 'max_allowed_packet' bytes ({len} > {max})"),
        )
    }

    /// `KILL` names a connection id no session has (MySQL's ER_NO_SUCH_THREAD,
    /// 1094).
    pub fn unknown_thread(id: u64) -> Self {
        Self::new(1094, "HY000", format!("Unknown thread id: {id}"))
    }

    /// `KILL` names another user's session (MySQL's ER_KILL_DENIED_ERROR, 1095).
    pub fn not_owner(id: u64) -> Self {
        Self::new(1095, "HY000", format!("You are not owner of thread {id}"))
    }

    /// No connection to the dataHost's active datasource could be had.
    pub fn no_datasource(datahost: &str, datasource: &str, why: &str) -> Self {
        Self::new(
            9101,
            "HY000",
            format!("zeroDB: no connection to datasource '{datasource}' of dataHost '{datahost}': {why}"),
        )
    }

    /// A statement waited for a switch that did not come in time.
    pub fn switch_timeout(
        datahost: &str,
        datasource: &str,
        window: std::time::Duration,
        why: &str,
    ) -> Self {
        Self::new(
            9106,
            "HY000",
            format!(
                "zeroDB: datasource '{datasource}' of dataHost '{datahost}' is down and no switch came within {window:?}: {why}"
            ),
        )
    }

    /// The backend went away while running the statement: it may or may not
    /// have been applied.
    pub fn backend_lost(datasource: &str, why: &str) -> Self {
        Self::new(
            9102,
            "08S01",
            format!("zeroDB: lost datasource '{datasource}' during the statement ({why}); it may or may not have been applied"),
        )
    }

    /// The session's transaction cannot go on: its datasource was switched or
    /// lost. SQLSTATE 40001 tells drivers to retry the whole transaction.
    pub fn transaction_lost(why: &str) -> Self {
        Self::new(
            9103,
            "40001",
            format!("zeroDB: the transaction was rolled back because {why}; issue ROLLBACK and retry it"),
        )
    }

    /// Session state that cannot move with a switch (an open cursor, long
    /// data not yet executed) was lost.
    pub fn state_lost(why: &str) -> Self {
        Self::new(9104, "HY000", format!("zeroDB: {why}"))
    }

    /// A schema change (`USE`, COM_INIT_DB) inside a transaction names a schema
    /// A session asked to hold more than a limit allows (`what`, with the
    /// limit's key under `limits:` and its value).
    pub fn session_limit(what: &str, key: &str, limit: usize) -> Self {
        Self::new(
            9107,
            "HY000",
            format!("zeroDB: {what}: this session holds its limit of {limit} (limits.{key})"),
        )
    }

    /// The session may create no more prepared statements (MySQL's
    /// ER_MAX_PREPARED_STMT_COUNT_REACHED, 1461).
    pub fn too_many_statements(limit: usize) -> Self {
        Self::new(
            1461,
            "42000",
            format!("Can't create more than max_prepared_stmt_count statements (current value: {limit}); see limits.max_prepared_stmt_count"),
        )
    }

    /// on another dataHost. SQLSTATE 25000 is an invalid transaction state.
    pub fn cross_datahost_in_transaction(schema: &str) -> Self {
        Self::new(
            9105,
            "25000",
            format!("zeroDB: schema '{schema}' lives on another dataHost; switch to it outside a transaction"),
        )
    }
}
