//! What an agent does to its MySQL/MariaDB server, over SQL (mysql_async):
//! read its state, promote it, fence it, point it at a source. The keeper
//! uses the same operations directly when a datasource has no agent.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use zerodb_core::control::LoadMeasure;
use zerodb_core::control::{AgentReport, BinlogPos, ReplicaStatus};

/// A failed operation on the server.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The server could not be reached or refused a statement.
    #[error("{addr}: {source}")]
    Sql {
        /// The server's address, host:port.
        addr: String,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// The server at this address did not answer within the operation timeout.
    #[error("{0}: no answer in time")]
    Timeout(String),
    /// The server took the connection but a statement did not finish in
    /// time (`SET GLOBAL read_only` waiting for commits, say).
    #[error("{0}: a statement did not finish in time")]
    Stalled(String),
    /// The operation could not be carried out, for this reason.
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    /// Whether the server answered (it refused a statement, or the
    /// operation failed there), as opposed to not answering at all: no
    /// connection, a dropped one, or no answer in time.
    pub fn server_answered(&self) -> bool {
        match self {
            // The server's error, or one of the operation's own checks on
            // what it answered (a relay log not applied in time, …).
            OpsError::Sql { source, .. } => matches!(
                source,
                mysql_async::Error::Server(_) | mysql_async::Error::Other(_)
            ),
            // A statement that does not finish in time is no answer in
            // time (SPEC §7: it does not stop a switch); what it did is
            // unknown.
            OpsError::Timeout(_) | OpsError::Stalled(_) => false,
            OpsError::Failed(_) => true,
        }
    }
}

/// Counts the threads running client statements (see
/// [`LoadMeasure::ThreadsRunning`]).
const CLIENT_THREADS_RUNNING: &str = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
     WHERE COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump', 'Binlog Dump GTID', \
     'Slave_IO', 'Slave_SQL', 'Slave_worker') \
     AND USER <> 'system user' AND ID <> CONNECTION_ID()";

/// One server, reached over SQL.
#[derive(Debug)]
pub struct MysqlOps {
    /// The datasource's name.
    pub name: String,
    /// The server's address, host:port.
    pub addr: String,
    opts: OptsBuilder,
    timeout: Duration,
    measure: LoadMeasure,
    /// The binlog index file: configured, or learned while the server lived.
    binlog_index: Mutex<Option<PathBuf>>,
}

impl MysqlOps {
    /// Operations on the server at `addr` (host:port; port 3306 when omitted) as `user`: `timeout`
    /// bounds each connection attempt and statement, `binlog_index` is the configured binlog index
    /// file (`None`: learned from the server).
    pub fn new(
        name: &str,
        addr: &str,
        user: &str,
        password: &str,
        timeout: Duration,
        measure: LoadMeasure,
        binlog_index: Option<PathBuf>,
    ) -> Self {
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(3306)),
            None => (addr.to_string(), 3306),
        };
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .stmt_cache_size(0);
        Self {
            name: name.to_string(),
            addr: addr.to_string(),
            opts,
            timeout,
            measure,
            binlog_index: Mutex::new(binlog_index),
        }
    }

    fn sql_err(&self, source: mysql_async::Error) -> OpsError {
        OpsError::Sql {
            addr: self.addr.clone(),
            source,
        }
    }

    async fn connect(&self) -> Result<Conn, OpsError> {
        match tokio::time::timeout(self.timeout, Conn::new(self.opts.clone())).await {
            Ok(r) => r.map_err(|e| self.sql_err(e)),
            Err(_) => Err(OpsError::Timeout(self.addr.clone())),
        }
    }

    /// Runs `f` on a fresh connection, within the operation timeout `t`.
    async fn with_conn<T>(
        &self,
        t: Duration,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, mysql_async::Error>,
    ) -> Result<T, OpsError> {
        let mut conn = self.connect().await?;
        let r = match tokio::time::timeout(t, f(&mut conn)).await {
            Ok(r) => r.map_err(|e| self.sql_err(e)),
            Err(_) => Err(OpsError::Stalled(self.addr.clone())),
        };
        // Best effort; a dead server's socket just closes.
        let _ = tokio::time::timeout(Duration::from_millis(200), conn.disconnect()).await;
        r
    }

    /// Everything the keeper needs to know. Never fails: a dead server gives
    /// `alive: false`, with the binlog end read from disk when possible.
    pub async fn report(&self) -> AgentReport {
        let mut r = AgentReport {
            datasource: self.name.clone(),
            loadavg_per_cpu: loadavg_per_cpu(),
            ..Default::default()
        };
        let t = self.timeout;
        // Cheap variables first. SHOW MASTER/SLAVE STATUS can block for long
        // (on a resumed semi-sync source, behind commits awaiting an ACK):
        // they get a slice of the timeout each, and the report stands
        // without them.
        let slow = t / 3;
        let got = self
            .with_conn(t, async |c| {
                let ro: Option<u8> = c.query_first("SELECT @@global.read_only").await?;
                let vars: Option<(Option<String>, Option<String>, Option<String>)> = c
                    .query_first(
                        "SELECT @@global.gtid_binlog_state, @@global.log_bin_index, @@global.datadir",
                    )
                    .await
                    .unwrap_or(None);
                let running: Option<u64> = c.query_first(CLIENT_THREADS_RUNNING).await?;
                // A timed-out statement leaves the connection unusable:
                // stop asking there.
                let master = match tokio::time::timeout(slow, c.query_first::<Row, _>("SHOW MASTER STATUS")).await {
                    Ok(m) => m?,
                    Err(_) => return Ok((ro, vars, running, None, None)),
                };
                let slave = tokio::time::timeout(slow, c.query_first::<Row, _>("SHOW SLAVE STATUS"))
                    .await
                    .ok()
                    .transpose()?
                    .flatten();
                Ok((ro, vars, running, master, slave))
            })
            .await;
        match got {
            Ok((ro, vars, running, master, slave)) => {
                r.alive = true;
                r.read_only = ro.map(|v| v != 0);
                let (gtid, index, datadir) = vars.unwrap_or_default();
                r.gtid_binlog_state = gtid.unwrap_or_default();
                if let Some(index) = index.filter(|i| !i.is_empty()) {
                    let p = resolve(&index, datadir.as_deref());
                    *self.binlog_index.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                }
                r.threads_running = running;
                r.binlog_end = master.and_then(|m| {
                    Some(BinlogPos {
                        file: col(&m, "File")?,
                        pos: col(&m, "Position")?.parse().ok()?,
                    })
                });
                r.replica = slave.map(|s| replica_status(&s));
            }
            Err(e) => {
                tracing::debug!(datasource = %self.name, error = %e, "server does not answer");
                let index = self
                    .binlog_index
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                r.binlog_end = index.and_then(|i| binlog_end_on_disk(&i).ok());
            }
        }
        r.load = match self.measure {
            LoadMeasure::Loadavg => r.loadavg_per_cpu,
            LoadMeasure::ThreadsRunning => r.threads_running.map(|n| n as f64),
        };
        r
    }

    /// Whether the server's `@@global.read_only` is on.
    pub async fn read_only(&self) -> Result<bool, OpsError> {
        let ro: Option<u8> = self
            .with_conn(self.timeout, async |c| {
                c.query_first("SELECT @@global.read_only").await
            })
            .await?;
        Ok(ro.is_some_and(|v| v != 0))
    }

    /// Applies the relay log it has, clears `read_only`, and stops and
    /// resets replication. When the relay log cannot be applied in time the
    /// promotion fails and changes nothing: `read_only` stays on and the
    /// replica keeps replicating from its source.
    ///
    /// `STOP SLAVE` waits for the I/O thread, which on a frozen source
    /// (paused, cut off) MariaDB only gets out of after seconds. Nothing
    /// comes from such a source, so the promotion does not wait for it:
    /// the stop is issued at once on a connection of its own, the relay log
    /// received is applied, `read_only` is cleared, and the stop and
    /// `RESET SLAVE ALL` complete in the background.
    ///
    /// It runs as a task of its own: a caller that stops waiting (a timeout,
    /// a dropped request) cannot cut it short between the stop of the I/O
    /// thread and what must follow.
    pub async fn promote(
        self: &std::sync::Arc<Self>,
        apply_timeout: Duration,
    ) -> Result<(), OpsError> {
        let me = self.clone();
        tokio::spawn(async move { me.promote_whole(apply_timeout).await })
            .await
            .map_err(|e| OpsError::Failed(format!("the promotion stopped: {e}")))?
    }

    async fn promote_whole(
        self: &std::sync::Arc<Self>,
        apply_timeout: Duration,
    ) -> Result<(), OpsError> {
        // What was received, read before the stop: while `STOP SLAVE` waits
        // for the I/O thread, SHOW SLAVE STATUS waits behind it.
        let received: Option<ReplicaStatus> = self
            .with_conn(self.timeout, async |c| {
                let s: Option<Row> = c.query_first("SHOW SLAVE STATUS").await?;
                Ok(s.map(|s| replica_status(&s)))
            })
            .await?;
        let me = self.clone();
        let stopper = tokio::spawn(async move {
            me.with_conn(apply_timeout + me.timeout * 4, async |c| {
                c.query_drop("STOP SLAVE IO_THREAD").await
            })
            .await
        });
        let secs = apply_timeout.as_secs_f64().max(0.001);
        let applied = self
            .with_conn(apply_timeout + self.timeout, async |c| {
                // A commit the SQL thread makes while this server's
                // semi-sync master side is on waits for an ACK no replica
                // will send (it has none): off while applying, on again
                // before the first client write.
                let semi_sync = semi_sync_in_use(c).await;
                if semi_sync {
                    c.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
                        .await?;
                }
                match &received {
                    // Not a replica: nothing to apply.
                    None => {}
                    Some(r) if !r.gtid_io_pos.is_empty() => {
                        // MASTER_GTID_WAIT takes no replication lock.
                        let q =
                            format!("SELECT MASTER_GTID_WAIT({}, {secs})", quote(&r.gtid_io_pos));
                        let waited: Option<i64> = c.query_first(q).await?;
                        if waited != Some(0) {
                            return Err(mysql_async::Error::Other(
                                format!(
                                    "relay log not applied in time (up to {}): {}",
                                    r.gtid_io_pos, r.last_error
                                )
                                .into(),
                            ));
                        }
                    }
                    Some(r) if !r.relay_applied() => {
                        return Err(mysql_async::Error::Other(
                            format!(
                                "replicating without GTID and behind ({}): promote it by hand",
                                r.last_error
                            )
                            .into(),
                        ));
                    }
                    Some(_) => {}
                }
                if semi_sync {
                    c.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = ON")
                        .await?;
                }
                c.query_drop("SET GLOBAL read_only = OFF").await
            })
            .await;
        let (me, promoted, was_replica) = (self.clone(), applied.is_ok(), received.is_some());
        tokio::spawn(async move {
            let _ = stopper.await;
            me.after_promotion(promoted, was_replica).await;
        });
        applied
    }

    /// What follows a promotion once the I/O thread has stopped: after a
    /// success, replication is stopped and reset; after a failure, which
    /// changes nothing (SPEC §7), a replica's I/O thread starts again so it
    /// keeps receiving from its source.
    async fn after_promotion(&self, promoted: bool, was_replica: bool) {
        if promoted {
            let reset = self
                .with_conn(self.timeout * 8, async |c| {
                    c.query_drop("STOP SLAVE").await?;
                    c.query_drop("RESET SLAVE ALL").await
                })
                .await;
            if let Err(e) = reset {
                tracing::error!(datasource = %self.name, error = %e, "promoted, but replication could not be reset");
            }
        } else if was_replica {
            let restart = self
                .with_conn(self.timeout * 4, async |c| {
                    c.query_drop("START SLAVE IO_THREAD").await
                })
                .await;
            if let Err(e) = restart {
                tracing::error!(datasource = %self.name, error = %e, "promotion failed, and replication could not be restarted");
            }
        }
    }

    /// Sets `read_only` and ends every client session but its own, so that
    /// users who may write despite `read_only` (MariaDB's `READ_ONLY ADMIN`,
    /// held by anyone with `ALL PRIVILEGES`) lose their sessions too.
    /// Returns how many sessions it ended.
    pub async fn fence(&self) -> Result<usize, OpsError> {
        // Sessions first: `SET GLOBAL read_only` waits for commits in
        // flight, which on a resumed semi-sync source wait for an ACK that
        // will never come. Then once more for any that slipped in between.
        self.with_conn(self.timeout, async |c| {
            let mut ended = end_sessions(c).await?;
            c.query_drop("SET GLOBAL read_only = ON").await?;
            ended += end_sessions(c).await?;
            Ok(ended)
        })
        .await
    }

    /// Clears `read_only`: lifts a fence that a switch which did not
    /// happen may have set, and nothing else.
    pub async fn unfence(&self) -> Result<(), OpsError> {
        self.with_conn(self.timeout, async |c| {
            c.query_drop("SET GLOBAL read_only = OFF").await
        })
        .await
    }

    /// Replicates from `source` (host:port), by GTID.
    pub async fn follow(&self, source: &str, user: &str, password: &str) -> Result<(), OpsError> {
        let (host, port) = source
            .rsplit_once(':')
            .ok_or_else(|| OpsError::Failed(format!("source address `{source}` has no port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| OpsError::Failed(format!("bad port in `{source}`")))?;
        let change = format!(
            "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {}, \
             MASTER_PASSWORD = {}, MASTER_USE_GTID = current_pos, MASTER_CONNECT_RETRY = 1",
            quote(host),
            quote(user),
            quote(password)
        );
        self.with_conn(self.timeout * 4, async |c| {
            c.query_drop("SET GLOBAL read_only = ON").await?;
            // Semi-sync's master side belongs to the source only: on a
            // replica every commit of its SQL thread would wait out
            // `rpl_semi_sync_master_timeout` for ACKs nobody sends.
            if semi_sync_in_use(c).await {
                c.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
                    .await?;
            }
            c.query_drop("STOP SLAVE").await?;
            c.query_drop(change).await?;
            c.query_drop("START SLAVE").await?;
            Ok(())
        })
        .await
    }

    /// Waits until this replica has applied the source up to `pos`.
    pub async fn catch_up(&self, pos: &BinlogPos, timeout: Duration) -> Result<(), OpsError> {
        let secs = timeout.as_secs_f64().max(0.001);
        let q = format!(
            "SELECT MASTER_POS_WAIT({}, {}, {secs})",
            quote(&pos.file),
            pos.pos
        );
        let r: Option<Option<i64>> = self
            .with_conn(timeout + self.timeout, async |c| c.query_first(q).await)
            .await?;
        match r.flatten() {
            Some(n) if n >= 0 => Ok(()),
            Some(_) => Err(OpsError::Failed(format!(
                "did not reach {}:{} within {timeout:?}",
                pos.file, pos.pos
            ))),
            None => Err(OpsError::Failed("replication is not running".into())),
        }
    }

    /// Whether the backend user `user` may write despite `read_only`.
    pub async fn can_bypass_read_only(&self) -> Result<bool, OpsError> {
        let grants: Vec<String> = self
            .with_conn(self.timeout, async |c| c.query("SHOW GRANTS").await)
            .await?;
        Ok(grants.iter().any(|g| {
            let g = g.to_ascii_uppercase();
            g.contains("ALL PRIVILEGES ON *.*")
                || g.contains("READ_ONLY ADMIN")
                || g.contains(" SUPER")
        }))
    }
}

/// Whether this server takes part in semi-synchronous replication (either
/// side enabled). Servers without the variables (no plugin) do not.
async fn semi_sync_in_use(c: &mut Conn) -> bool {
    c.query_first::<Option<i64>, _>(
        "SELECT @@global.rpl_semi_sync_master_enabled OR @@global.rpl_semi_sync_slave_enabled",
    )
    .await
    .ok()
    .flatten()
    .flatten()
        == Some(1)
}

/// Ends every client session but this one (replication and system
/// threads stay); returns how many it ended.
async fn end_sessions(c: &mut Conn) -> Result<usize, mysql_async::Error> {
    let ids: Vec<u64> = c
        .query(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() \
             AND USER NOT IN ('system user', 'event_scheduler') \
             AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID', \
                                 'Slave_IO', 'Slave_SQL', 'Slave_worker')",
        )
        .await?;
    let mut ended = 0;
    for id in ids {
        // Gone already is fine.
        if c.query_drop(format!("KILL CONNECTION {id}")).await.is_ok() {
            ended += 1;
        }
    }
    Ok(ended)
}

fn col(row: &Row, name: &str) -> Option<String> {
    row.get_opt::<Option<String>, _>(name)
        .and_then(|r| r.ok())
        .flatten()
}

fn replica_status(s: &Row) -> ReplicaStatus {
    let pos = |file: &str, pos: &str| {
        Some(BinlogPos {
            file: col(s, file).filter(|f| !f.is_empty())?,
            pos: col(s, pos)?.parse().ok()?,
        })
    };
    let yes = |c: &str| col(s, c).is_some_and(|v| v == "Yes");
    let host = col(s, "Master_Host").unwrap_or_default();
    let port = col(s, "Master_Port").unwrap_or_default();
    let sql_error = col(s, "Last_SQL_Error").unwrap_or_default();
    ReplicaStatus {
        source: format!("{host}:{port}"),
        io_running: yes("Slave_IO_Running"),
        sql_running: yes("Slave_SQL_Running"),
        read: pos("Master_Log_File", "Read_Master_Log_Pos"),
        executed: pos("Relay_Master_Log_File", "Exec_Master_Log_Pos"),
        gtid_io_pos: col(s, "Gtid_IO_Pos").unwrap_or_default(),
        last_error: if sql_error.is_empty() {
            col(s, "Last_IO_Error").unwrap_or_default()
        } else {
            sql_error.clone()
        },
        sql_error,
    }
}

/// A SQL string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

fn resolve(path: &str, datadir: Option<&str>) -> PathBuf {
    let p = Path::new(path);
    match datadir {
        Some(d) if p.is_relative() => Path::new(d).join(p),
        _ => p.to_path_buf(),
    }
}

/// The 1-minute load average over the number of CPUs.
pub fn loadavg_per_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let one: f64 = s.split_whitespace().next()?.parse().ok()?;
    let cpus = std::thread::available_parallelism().ok()?.get() as f64;
    Some(one / cpus)
}

/// The end of the newest binlog named in `index`: the position after its
/// last complete event (a crash may leave a torn event at the tail).
pub fn binlog_end_on_disk(index: &Path) -> std::io::Result<BinlogPos> {
    let list = std::fs::read_to_string(index)?;
    let last = list
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| std::io::Error::other("empty binlog index"))?
        .trim();
    let path = match Path::new(last) {
        p if p.is_absolute() => p.to_path_buf(),
        p => index.parent().unwrap_or(Path::new(".")).join(p),
    };
    let bytes = std::fs::read(&path)?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(BinlogPos {
        file,
        pos: last_complete_event_end(&bytes),
    })
}

/// Walks binlog v4 event headers (19 bytes: timestamp, type, server id,
/// event length, next position, flags) from after the 4-byte magic.
fn last_complete_event_end(bytes: &[u8]) -> u64 {
    const MAGIC: &[u8] = b"\xfebin";
    if !bytes.starts_with(MAGIC) {
        return 0;
    }
    let mut at = MAGIC.len();
    while let Some(h) = bytes.get(at..at + 19) {
        let len = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
        if len < 19 || at + len > bytes.len() {
            break;
        }
        at += len;
    }
    at as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(len: u32) -> Vec<u8> {
        let mut e = vec![0u8; len as usize];
        e[9..13].copy_from_slice(&len.to_le_bytes());
        e
    }

    #[test]
    fn binlog_end_skips_a_torn_tail() {
        let mut b = b"\xfebin".to_vec();
        b.extend(event(100));
        b.extend(event(40));
        assert_eq!(last_complete_event_end(&b), 144);
        let mut torn = b.clone();
        torn.extend(&event(60)[..30]);
        assert_eq!(last_complete_event_end(&torn), 144);
        assert_eq!(last_complete_event_end(b"junk"), 0);
        let mut bad_len = b.clone();
        let mut header = [0u8; 19];
        header[9..13].copy_from_slice(&3u32.to_le_bytes());
        bad_len.extend(header);
        assert_eq!(last_complete_event_end(&bad_len), 144);
    }

    #[test]
    fn binlog_end_from_index_file() {
        let dir = std::env::temp_dir().join(format!("zerodb-binlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = b"\xfebin".to_vec();
        b.extend(event(256));
        std::fs::write(dir.join("mysql-bin.000002"), &b).unwrap();
        std::fs::write(
            dir.join("mysql-bin.index"),
            "./mysql-bin.000001\n./mysql-bin.000002\n",
        )
        .unwrap();
        let end = binlog_end_on_disk(&dir.join("mysql-bin.index")).unwrap();
        assert_eq!(
            end,
            BinlogPos {
                file: "mysql-bin.000002".into(),
                pos: 260
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
    }
}
