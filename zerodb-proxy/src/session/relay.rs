//! Moving one response from a backend to a client.
//!
//! Frames are parsed in place in the backend connection's read buffer; their
//! sequence ids are rewritten to the client's, and every complete frame read
//! so far is written to the client in one call. Rows are never copied into a
//! packet of their own, never decoded, never re-encoded.

use crate::backend::{BackendConn, BackendError};
use crate::conn::Conn;
use crate::conn::ReadError;
use crate::health::Health;
use crate::protocol::frame::{FrameHeader, HEADER_LEN};
use crate::protocol::response::{ResponseError, ResponseParser};
use crate::protocol::{ResponseKind, Step};
use crate::registry::SessionHandle;

/// A row frame larger than this is passed on as it arrives rather than
/// held whole (the relay's memory per session stays near its read chunk).
const STREAM_ABOVE: usize = 64 * 1024;

/// Bytes a client may send ahead while its statement runs that the relay
/// reads (watching for the client to go away); the rest wait in the socket.
const PIPELINED_MAX: usize = 64 * 1024;

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
#[expect(
    clippy::too_many_lines,
    reason = "the hot loop of every statement: one future, no nested ones (each costs the session task state and instructions per statement, measured with scripts/callgrind.sh)"
)]
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
    // Bytes of a large row frame still to pass through as they come (its
    // header already went out): a session never holds a whole large row.
    let mut streaming = 0usize;
    loop {
        let mut pos = 0;
        let mut step = Step::More;
        {
            let buf = &mut backend.conn.rbuf;
            if streaming > 0 {
                pos = streaming.min(buf.len());
                streaming -= pos;
            }
            while streaming == 0 {
                if parser.expects_row() {
                    pos += pass_plain_rows(&mut buf[pos..], seq);
                }
                let Some(h) = FrameHeader::parse(&buf[pos..]) else {
                    break;
                };
                let end = pos + h.total();
                if end > buf.len() {
                    // A plain row larger than what arrived: its header
                    // goes out with what is here, the rest as it comes.
                    if parser.expects_row()
                        && h.total() > STREAM_ABOVE
                        && buf
                            .get(pos + HEADER_LEN)
                            .is_some_and(|&first| ResponseParser::plain_row(first, h.len))
                    {
                        backend_seq = h.seq;
                        buf[pos + 3] = *seq;
                        *seq = seq.wrapping_add(1);
                        streaming = end - buf.len();
                        pos = buf.len();
                    }
                    break;
                }
                backend_seq = h.seq;
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
            // At once when the socket takes it all (no future to set up),
            // else the rest as the client reads.
            let frames = &backend.conn.rbuf[..pos];
            let sent = client.write_now(frames).map_err(|_| RelayError::Client)?;
            if (sent < pos || client.output_pending())
                && client.write_rest(&frames[sent..]).await.is_err()
            {
                return Err(RelayError::Client);
            }
            backend.conn.consume(pos);
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
        let need = if streaming > 0 {
            1
        } else {
            let need = FrameHeader::parse(&backend.conn.rbuf)
                .map_or(4, |h| h.total().saturating_sub(backend.conn.rbuf.len()));
            // A row is streamed once its first byte is here: no room for
            // all of it.
            if parser.expects_row() {
                need.min(STREAM_ABOVE)
            } else {
                need
            }
        };
        let lost = tokio::select! {
            biased;
            r = backend.conn.fill(need) => r.err().map(|e| {
                let reset = matches!(&e, ReadError::Io(io) if is_reset(io));
                (e.to_string(), reset)
            }),
            () = session.attention() => (!health.is_up()).then(|| ("the datasource was marked down by health probes".to_string(), false)),
            // Readiness first, so that waiting costs the client no buffer.
            // Bytes it sends meanwhile are kept for the commands that come
            // next, up to a bound: past it they wait in the socket (and the
            // client's TCP window), so a client streaming data behind a
            // slow statement cannot grow the proxy's memory.
            r = client.read_ready(), if client.rbuf.len() < PIPELINED_MAX => match r.map_err(ReadError::from).and_then(|()| client.try_fill()) {
                Ok(_) => None,
                Err(_) => return Err(RelayError::Client),
            },
        };
        if let Some((reason, reset)) = lost {
            let partial =
                streaming > 0 || !parser.at_packet_start() || !backend.conn.rbuf.is_empty();
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

/// Gives the plain rows (see [`ResponseParser::plain_row`]) among the whole
/// frames at the front of `frames` the client's next sequence ids, up to
/// the first frame that is not one; returns how many bytes they take. The
/// parser expects a row before each and needs to see none of them.
fn pass_plain_rows(frames: &mut [u8], seq: &mut u8) -> usize {
    let mut pos = 0;
    while let [l0, l1, l2, _, first, ..] = frames[pos..] {
        let len = usize::from(l0) | usize::from(l1) << 8 | usize::from(l2) << 16;
        let end = pos + HEADER_LEN + len;
        if end > frames.len() || !ResponseParser::plain_row(first, len) {
            break;
        }
        frames[pos + 3] = *seq;
        *seq = seq.wrapping_add(1);
        pos = end;
    }
    pos
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rows_are_passed_up_to_the_first_frame_that_is_not_one() {
        // Two rows, then a terminator, then a row cut short.
        let mut frames = vec![
            2, 0, 0, 7, 0x01, b'a', //
            3, 0, 0, 8, 0xfb, 0x01, b'b', //
            7, 0, 0, 9, 0xfe, 0, 0, 2, 0, 0, 0, //
            5, 0, 0, 10, 0x01,
        ];
        let mut seq = 1;
        assert_eq!(pass_plain_rows(&mut frames, &mut seq), 13);
        assert_eq!(seq, 3);
        assert_eq!((frames[3], frames[9]), (1, 2), "the client's sequence ids");
        assert_eq!(frames[16], 9, "the terminator is the parser's");
        let mut cut = frames[24..].to_vec();
        assert_eq!(pass_plain_rows(&mut cut, &mut seq), 0, "not whole");
        assert_eq!(pass_plain_rows(&mut [0, 0, 0, 1], &mut seq), 0, "empty");
        assert_eq!(seq, 3);
    }
}
