//! Moving one response from a backend to a client.
//!
//! Frames are parsed in place in the backend connection's read buffer; their
//! sequence ids are rewritten to the client's, and every complete frame read
//! so far is written to the client in one call. Rows are never copied into a
//! packet of their own, never decoded, never re-encoded.

use crate::backend::{BackendConn, BackendError};
use crate::health::Health;
use crate::protocol::conn::ReadError;
use crate::protocol::frame::FrameHeader;
use crate::protocol::response::ResponseError;
use crate::protocol::{Conn, ResponseKind, Step};
use crate::server::SessionHandle;
use bytes::Buf;
use tokio::io::AsyncWriteExt;

/// What a relayed response left behind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Relayed {
    pub status: Option<u16>,
    pub error: bool,
    pub prepare: Option<crate::protocol::response::PrepareOk>,
}

pub(super) enum RelayError {
    /// The client went away; the backend connection is mid-response.
    Client,
    /// The backend failed. `mid_packet`: the client holds part of a packet.
    /// `unread`: the server reset the connection before any byte of an
    /// answer, which it does only when it closed with the command still
    /// unread. (Whether a whole packet had already been relayed is the
    /// session's to check: the client's sequence id moved.)
    Backend {
        error: BackendError,
        mid_packet: bool,
        unread: bool,
    },
}

/// Whether a read or write failure is the peer resetting the connection.
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

fn protocol_error(addr: &str, e: ResponseError) -> BackendError {
    BackendError::Protocol {
        addr: addr.to_string(),
        what: e.to_string(),
    }
}

/// Relays the response to the command just sent. `seq` is the client's next
/// sequence id and is advanced. With `prepare_id`, the statement id of a
/// PREPARE_OK is replaced by that (client-side) id.
///
/// While waiting for the backend it also watches two things, so a session
/// never hangs on a server that is gone: the datasource being marked down
/// by the health probes (`health` says so when the session is nudged), and
/// the client going away (its socket reaching end of stream; bytes it
/// pipelines meanwhile are kept).
pub(super) async fn relay(
    client: &mut Conn,
    seq: &mut u8,
    backend: &mut BackendConn,
    (session, health): (&SessionHandle, &Health),
    kind: ResponseKind,
    prepare_id: Option<u32>,
    max_packet: usize,
) -> Result<Relayed, RelayError> {
    let mut parser = backend.response_parser(kind);
    backend.broken = true;
    let mut backend_seq = 0u8;
    loop {
        let mut pos = 0;
        let mut step = Step::More;
        {
            let buf = &mut backend.conn.rbuf;
            while let Some(h) = FrameHeader::parse(&buf[pos..]) {
                let end = pos + h.total();
                if end > buf.len() {
                    break;
                }
                backend_seq = h.seq;
                if h.len > 0 && parser.is_plain_row(buf[pos + 4], h.len) {
                    buf[pos + 3] = *seq;
                    *seq = seq.wrapping_add(1);
                    pos = end;
                    continue;
                }
                let first_of_prepare = parser.prepare_ok().is_none();
                step = match parser.feed(&buf[pos + 4..end]) {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(RelayError::Backend {
                            error: protocol_error(&backend.addr, e),
                            mid_packet: !parser.at_packet_start(),
                            unread: false,
                        })
                    }
                };
                if let (Some(id), true) = (
                    prepare_id,
                    first_of_prepare && parser.prepare_ok().is_some(),
                ) {
                    buf[pos + 5..pos + 9].copy_from_slice(&id.to_le_bytes());
                }
                buf[pos + 3] = *seq;
                *seq = seq.wrapping_add(1);
                pos = end;
                if step != Step::More {
                    break;
                }
            }
        }
        if pos > 0 {
            if client
                .stream
                .write_all(&backend.conn.rbuf[..pos])
                .await
                .is_err()
            {
                return Err(RelayError::Client);
            }
            backend.conn.rbuf.advance(pos);
        }
        match step {
            Step::Done => {
                backend.broken = false;
                return Ok(Relayed {
                    status: parser.status(),
                    error: parser.saw_error(),
                    prepare: parser.prepare_ok(),
                });
            }
            Step::LocalInfile => {
                local_infile(client, seq, backend, backend_seq, max_packet).await?;
                continue;
            }
            Step::More => {}
        }
        let need = FrameHeader::parse(&backend.conn.rbuf)
            .map_or(4, |h| h.total().saturating_sub(backend.conn.rbuf.len()));
        let lost = tokio::select! {
            biased;
            r = backend.conn.fill(need) => r.err().map(|e| {
                let reset = matches!(&e, ReadError::Io(io) if is_reset(io));
                (e.to_string(), reset)
            }),
            () = session.attention() => (!health.is_up()).then(|| ("the datasource was marked down by health probes".to_string(), false)),
            // Readiness first, so that waiting costs the client no buffer.
            r = client.read_ready() => match r.map_err(ReadError::from).and_then(|()| client.try_fill()) {
                Ok(_) => None,
                Err(_) => return Err(RelayError::Client),
            },
        };
        if let Some((reason, reset)) = lost {
            let partial = !parser.at_packet_start() || !backend.conn.rbuf.is_empty();
            return Err(RelayError::Backend {
                error: BackendError::Lost {
                    addr: backend.addr.clone(),
                    reason,
                },
                mid_packet: partial,
                unread: reset && !partial,
            });
        }
    }
}

/// LOAD DATA LOCAL: relays the client's file packets (up to the empty one)
/// to the backend.
async fn local_infile(
    client: &mut Conn,
    seq: &mut u8,
    backend: &mut BackendConn,
    backend_seq: u8,
    max_packet: usize,
) -> Result<(), RelayError> {
    let mut bseq = backend_seq.wrapping_add(1);
    loop {
        let pkt = client
            .read_packet(max_packet)
            .await
            .map_err(|_| RelayError::Client)?;
        *seq = pkt.last_seq.wrapping_add(1);
        bseq = backend
            .conn
            .send(bseq, &pkt.payload)
            .await
            .map_err(|e| RelayError::Backend {
                error: BackendError::Lost {
                    addr: backend.addr.clone(),
                    reason: e.to_string(),
                },
                mid_packet: false,
                unread: false,
            })?;
        if pkt.payload.is_empty() {
            return Ok(());
        }
    }
}
