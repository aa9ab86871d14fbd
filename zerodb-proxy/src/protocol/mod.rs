//! The MySQL wire protocol, as far as a relay needs it.
//!
//! * [`frame`] — physical packet framing (3-byte length + sequence id) and
//!   logical packets spanning several 16 MiB frames.
//! * [`packets`] — the few packets the proxy writes itself (OK, ERR, EOF,
//!   handshake pieces) and the few fields it reads (status flags, ids).
//! * [`response`] — a pure state machine that, fed the backend's frames one by
//!   one, says where a response ends and what state the session is left in.
//!
//! Nothing here does I/O: the socket that speaks these frames is
//! [`crate::conn::Conn`].

pub mod compress;
pub mod frame;
pub mod packets;
pub mod response;

pub use frame::{FrameHeader, MAX_FRAME};
pub use response::{ResponseKind, ResponseParser, Step};

/// Command bytes (first byte of a client request).
pub mod cmd {
    /// `COM_SLEEP`: the server's internal idle state; clients never send it.
    pub const SLEEP: u8 = 0x00;
    /// `COM_QUIT`: the client closes the connection.
    pub const QUIT: u8 = 0x01;
    /// `COM_INIT_DB`: changes the default schema.
    pub const INIT_DB: u8 = 0x02;
    /// `COM_QUERY`: runs a statement over the text protocol.
    pub const QUERY: u8 = 0x03;
    /// `COM_FIELD_LIST`: lists a table's columns (deprecated).
    pub const FIELD_LIST: u8 = 0x04;
    /// `COM_REFRESH`: flushes tables, logs or caches.
    pub const REFRESH: u8 = 0x07;
    /// `COM_STATISTICS`: asks for a short human-readable status string.
    pub const STATISTICS: u8 = 0x09;
    /// `COM_DEBUG`: has the server dump debug information to its log.
    pub const DEBUG: u8 = 0x0d;
    /// `COM_PROCESS_KILL`: kills a connection by id.
    pub const PROCESS_KILL: u8 = 0x0c;
    /// `COM_PING`: checks that the server is alive.
    pub const PING: u8 = 0x0e;
    /// `COM_CHANGE_USER`: authenticates again, possibly as another user, and resets the session.
    pub const CHANGE_USER: u8 = 0x11;
    /// `COM_STMT_PREPARE`: prepares a statement.
    pub const STMT_PREPARE: u8 = 0x16;
    /// `COM_STMT_EXECUTE`: executes a prepared statement.
    pub const STMT_EXECUTE: u8 = 0x17;
    /// `COM_STMT_SEND_LONG_DATA`: sends a parameter's value in pieces before execution.
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    /// `COM_STMT_CLOSE`: deallocates a prepared statement (no response).
    pub const STMT_CLOSE: u8 = 0x19;
    /// `COM_STMT_RESET`: discards a prepared statement's long data and closes its cursor.
    pub const STMT_RESET: u8 = 0x1a;
    /// `COM_SET_OPTION`: turns multi-statement support on or off.
    pub const SET_OPTION: u8 = 0x1b;
    /// `COM_STMT_FETCH`: fetches rows from a prepared statement's open cursor.
    pub const STMT_FETCH: u8 = 0x1c;
    /// `COM_RESET_CONNECTION`: resets the session state without authenticating again.
    pub const RESET_CONNECTION: u8 = 0x1f;
    /// `COM_STMT_BULK_EXECUTE` (MariaDB): runs a prepared statement once per
    /// row of parameters sent (array binding).
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;

    /// Human name of a command byte, for errors and logs.
    pub fn name(c: u8) -> &'static str {
        match c {
            0x00 => "COM_SLEEP",
            0x01 => "COM_QUIT",
            0x02 => "COM_INIT_DB",
            0x03 => "COM_QUERY",
            0x04 => "COM_FIELD_LIST",
            0x05 => "COM_CREATE_DB",
            0x06 => "COM_DROP_DB",
            0x07 => "COM_REFRESH",
            0x08 => "COM_SHUTDOWN",
            0x09 => "COM_STATISTICS",
            0x0a => "COM_PROCESS_INFO",
            0x0b => "COM_CONNECT",
            0x0c => "COM_PROCESS_KILL",
            0x0d => "COM_DEBUG",
            0x0e => "COM_PING",
            0x0f => "COM_TIME",
            0x10 => "COM_DELAYED_INSERT",
            0x11 => "COM_CHANGE_USER",
            0x12 => "COM_BINLOG_DUMP",
            0x13 => "COM_TABLE_DUMP",
            0x14 => "COM_CONNECT_OUT",
            0x15 => "COM_REGISTER_SLAVE",
            0x16 => "COM_STMT_PREPARE",
            0x17 => "COM_STMT_EXECUTE",
            0x18 => "COM_STMT_SEND_LONG_DATA",
            0x19 => "COM_STMT_CLOSE",
            0x1a => "COM_STMT_RESET",
            0x1b => "COM_SET_OPTION",
            0x1c => "COM_STMT_FETCH",
            0x1d => "COM_DAEMON",
            0x1e => "COM_BINLOG_DUMP_GTID",
            0x1f => "COM_RESET_CONNECTION",
            0xfa => "COM_STMT_BULK_EXECUTE",
            _ => "unknown command",
        }
    }
}

/// Server status flags the proxy reads (`SERVER_STATUS_*`).
pub mod status {
    /// `SERVER_STATUS_IN_TRANS`: a transaction is open.
    pub const IN_TRANS: u16 = 0x0001;
    /// `SERVER_STATUS_AUTOCOMMIT`: autocommit is on.
    pub const AUTOCOMMIT: u16 = 0x0002;
    /// `SERVER_MORE_RESULTS_EXISTS`: another result follows this one.
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    /// `SERVER_STATUS_CURSOR_EXISTS`: a cursor is open for the result.
    pub const CURSOR_EXISTS: u16 = 0x0040;
    /// `SERVER_STATUS_LAST_ROW_SENT`: the open cursor has sent its last row.
    pub const LAST_ROW_SENT: u16 = 0x0080;
    /// `SERVER_STATUS_NO_BACKSLASH_ESCAPES`: `sql_mode` has
    /// NO_BACKSLASH_ESCAPES (clients escape strings by doubling quotes).
    pub const NO_BACKSLASH_ESCAPES: u16 = 0x0200;
    /// `SERVER_STATUS_IN_TRANS_READONLY`: the open transaction is read-only.
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    /// The flags a new session starts with that come from the server's
    /// global settings (`autocommit`, `sql_mode`), not from what the
    /// session did: what a login OK says.
    pub const OF_A_FRESH_SESSION: u16 = AUTOCOMMIT | NO_BACKSLASH_ESCAPES;
}

/// Capability flags (`CLIENT_*`).
pub mod caps {
    /// `CLIENT_LONG_PASSWORD`: the 4.1 password hashing (`CLIENT_MYSQL` on MariaDB).
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    /// `CLIENT_FOUND_ROWS`: affected-row counts give rows matched rather than rows changed.
    pub const FOUND_ROWS: u32 = 0x0000_0002;
    /// `CLIENT_LONG_FLAG`: column definitions carry all column flags.
    pub const LONG_FLAG: u32 = 0x0000_0004;
    /// `CLIENT_CONNECT_WITH_DB`: the handshake response names a default schema.
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    /// `CLIENT_NO_SCHEMA`: `db.table.column` names are not allowed.
    pub const NO_SCHEMA: u32 = 0x0000_0010;
    /// `CLIENT_COMPRESS`: the compressed protocol.
    pub const COMPRESS: u32 = 0x0000_0020;
    /// `CLIENT_ODBC`: an ODBC client (little or no effect on current servers).
    pub const ODBC: u32 = 0x0000_0040;
    /// `CLIENT_LOCAL_FILES`: the client can send local files for `LOAD DATA LOCAL`.
    pub const LOCAL_FILES: u32 = 0x0000_0080;
    /// `CLIENT_IGNORE_SPACE`: spaces between a function name and `(` are ignored.
    pub const IGNORE_SPACE: u32 = 0x0000_0100;
    /// `CLIENT_PROTOCOL_41`: the 4.1 protocol (SQLSTATE in ERR packets, 4.1 column definitions).
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    /// `CLIENT_INTERACTIVE`: the session times out after `interactive_timeout`
    /// instead of `wait_timeout`.
    pub const INTERACTIVE: u32 = 0x0000_0400;
    /// `CLIENT_SSL`: the connection switches to TLS during the handshake.
    pub const SSL: u32 = 0x0000_0800;
    /// `CLIENT_TRANSACTIONS`: OK and EOF packets carry the status flags.
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    /// `CLIENT_SECURE_CONNECTION`: 4.1 authentication, with a length-prefixed auth response.
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    /// `CLIENT_MULTI_STATEMENTS`: one `COM_QUERY` may hold several statements.
    pub const MULTI_STATEMENTS: u32 = 0x0001_0000;
    /// `CLIENT_MULTI_RESULTS`: the client accepts several results to one `COM_QUERY`.
    pub const MULTI_RESULTS: u32 = 0x0002_0000;
    /// `CLIENT_PS_MULTI_RESULTS`: the client accepts several results to one `COM_STMT_EXECUTE`.
    pub const PS_MULTI_RESULTS: u32 = 0x0004_0000;
    /// `CLIENT_PLUGIN_AUTH`: authentication plugins are named, and the server may switch them.
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    /// `CLIENT_CONNECT_ATTRS`: the handshake response carries connection attributes.
    pub const CONNECT_ATTRS: u32 = 0x0010_0000;
    /// `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`: the auth response has a
    /// length-encoded length, so it may exceed 255 bytes.
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;
    /// `CLIENT_SESSION_TRACK`: OK packets may report session state changes.
    pub const SESSION_TRACK: u32 = 0x0080_0000;
    /// `CLIENT_DEPRECATE_EOF`: an OK packet (header 0xFE) replaces the EOF packets in result sets.
    pub const DEPRECATE_EOF: u32 = 0x0100_0000;

    /// Flags that change the bytes a server sends, or how it interprets a
    /// session: a backend connection must have exactly the client's value of
    /// each, so responses can be relayed unchanged.
    pub const SESSION_SHAPING: u32 = FOUND_ROWS
        | LONG_FLAG
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | INTERACTIVE
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | SESSION_TRACK
        | DEPRECATE_EOF;

    /// What the proxy offers clients (intersected with what the backends
    /// offer, but for what the proxy does itself: see
    /// `Shared::offered_caps`). TLS is offered apart, when the proxy has a
    /// certificate.
    pub const OFFERED: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA
        | SESSION_TRACK
        | DEPRECATE_EOF
        | COMPRESS;

    /// What the proxy needs from every backend, whatever the client asked.
    /// (`LONG_PASSWORD` is `CLIENT_MYSQL` on MariaDB, whose servers clear
    /// it to say they exchange [`mariadb`] flags.)
    pub const REQUIRED: u32 =
        LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH;

    /// MariaDB's extended capability flags (`MARIADB_CLIENT_*`), carried in
    /// the last 4 reserved bytes of both handshake packets when
    /// `CLIENT_MYSQL` is off.
    pub mod mariadb {
        /// `MARIADB_CLIENT_PROGRESS`: a long statement (ALTER TABLE, LOAD
        /// DATA, CHECK TABLE, …) sends progress packets before its answer.
        pub const PROGRESS: u32 = 0x0000_0001;
        /// `MARIADB_CLIENT_STMT_BULK_OPERATIONS`: COM_STMT_BULK_EXECUTE.
        pub const STMT_BULK_OPERATIONS: u32 = 0x0000_0004;
        /// `MARIADB_CLIENT_EXTENDED_METADATA`: column definitions carry a type name and format.
        pub const EXTENDED_METADATA: u32 = 0x0000_0008;
        /// `MARIADB_CLIENT_CACHE_METADATA`: the server may leave out column
        /// definitions the client has cached.
        pub const CACHE_METADATA: u32 = 0x0000_0010;

        /// What the proxy offers (intersected with what the backends offer):
        /// - extended column metadata (a column's type name and format,
        ///   such as `point` or `json`), which changes only column
        ///   definitions, relayed as bytes;
        /// - metadata caching: a result set's column count carries a flag,
        ///   and when it is 0 the server sends no column definitions (a
        ///   prepared statement executed again). `ResponseParser` reads the
        ///   flag; a session moved to another datasource keeps the
        ///   client's cache valid, as the statement is prepared again from
        ///   the same text;
        /// - bulk execution (COM_STMT_BULK_EXECUTE), answered as an
        ///   execution is: an OK or ERR, or result sets (`RETURNING`);
        /// - progress reports: packets shaped as an ERR with code 0xFFFF
        ///   that `ResponseParser` passes as part of the response.
        pub const OFFERED: u32 =
            PROGRESS | STMT_BULK_OPERATIONS | EXTENDED_METADATA | CACHE_METADATA;
    }
}
