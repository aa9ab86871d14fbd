//! A TCP connection speaking MySQL frames, with buffers that an idle
//! connection gives back.

use crate::protocol::frame::{assemble, put_packet, Assembled};
use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much a read asks for at least.
const READ_CHUNK: usize = 16 * 1024;
/// How much [`Conn::try_fill`] reads at least, into a buffer on the stack
/// when the connection holds no room.
const PROBE: usize = 64;

/// Writes what the socket takes of `buf` now, without waiting: how many
/// bytes, 0 when it is full.
pub fn write_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match stream.try_write(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        r => r,
    }
}

/// A framed MySQL connection (client side or backend side).
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub rbuf: BytesMut,
    /// Bytes queued for writing.
    pub wbuf: BytesMut,
    /// The runtime whose event loop polls `stream`.
    runtime: Option<tokio::runtime::Id>,
    /// Longest a write may wait for the peer to take any byte (`None`:
    /// no limit); past it the write fails with `TimedOut`.
    pub write_timeout: Option<std::time::Duration>,
}

fn current_runtime() -> Option<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current().ok().map(|h| h.id())
}

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// Reading from the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The packet is larger than the limit.
    #[error("packet of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload bytes counted when the limit was passed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's sequence id does not follow the one before it.
    #[error("packet out of order: expected sequence id {expected}, got {got}")]
    BadSequence {
        /// The sequence id that should have come.
        expected: u8,
        /// The sequence id that came.
        got: u8,
    },
}

/// One logical packet read whole.
#[derive(Debug)]
pub struct Packet {
    /// The payload, joined from all its frames.
    pub payload: Vec<u8>,
    /// The sequence id of its first frame.
    pub first_seq: u8,
    /// The sequence id of its last frame.
    pub last_seq: u8,
}

impl Conn {
    /// Wraps a socket, with `TCP_NODELAY` set and empty buffers, polled by
    /// the runtime this is called on.
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            runtime: current_runtime(),
            write_timeout: None,
        }
    }

    /// Moves the socket to the event loop of the runtime this is called
    /// on, if another one polls it (a pooled connection opened by the
    /// pool's upkeep, or by a session on another thread, would otherwise
    /// be woken through that thread). The socket is duplicated, the copy
    /// registered here, the original deregistered and closed.
    pub fn rehome(&mut self) -> io::Result<()> {
        let here = current_runtime();
        if here.is_none() || here == self.runtime {
            return Ok(());
        }
        let fd = std::os::fd::AsFd::as_fd(&self.stream).try_clone_to_owned()?;
        self.stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
        self.runtime = here;
        Ok(())
    }

    /// Reads more bytes into `rbuf`, at least `want` of room. Returns how
    /// many arrived; `Closed` at end of stream. A connection holding no
    /// buffer waits for bytes before it takes one.
    pub async fn fill(&mut self, want: usize) -> Result<usize, ReadError> {
        if self.rbuf.capacity() == 0 {
            self.read_ready().await?;
        }
        self.rbuf.reserve(want.max(READ_CHUNK));
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        Ok(n)
    }

    /// Waits until the socket has bytes (or end of stream) to read, without
    /// reading them. Through the stream's own reader slot: tokio's
    /// `readable()` would queue a waiter under a lock at every wait.
    pub async fn read_ready(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)).await
    }

    /// Reads what has already arrived, without waiting: `Closed` at end of
    /// stream, `Ok(0)` when nothing is there. Reserves room only if there
    /// is something to read.
    pub fn try_fill(&mut self) -> Result<usize, ReadError> {
        if self.rbuf.capacity() - self.rbuf.len() >= PROBE {
            // Room already there (a busy connection keeps its buffer): read
            // into it, as much as fits.
            return match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => Err(ReadError::Closed),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e.into()),
            };
        }
        // Enough to tell bytes from end of stream; more stay queued. (When
        // nothing is there tokio answers without a system call, and this
        // buffer's zeroing is the whole cost: keep it small.)
        let mut probe = [0u8; PROBE];
        match self.stream.try_read(&mut probe) {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.rbuf.extend_from_slice(&probe[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the first `n` bytes read. When that is all of them, the
    /// buffer starts over at its front: the next read then finds its room
    /// without [`BytesMut::reserve`] having to take back the consumed
    /// front (about 90 instructions, twice a statement).
    pub fn consume(&mut self, n: usize) {
        if n == self.rbuf.len() {
            self.rbuf.clear();
        } else {
            self.rbuf.advance(n);
        }
    }

    /// Reads one whole logical packet of at most `max` bytes.
    pub async fn read_packet(&mut self, max: usize) -> Result<Packet, ReadError> {
        loop {
            match assemble(&self.rbuf, max) {
                Assembled::Packet {
                    payload,
                    first_seq,
                    last_seq,
                    consumed,
                } => {
                    self.consume(consumed);
                    return Ok(Packet {
                        payload,
                        first_seq,
                        last_seq,
                    });
                }
                Assembled::Incomplete { need } => {
                    self.fill(need).await?;
                }
                Assembled::TooLarge { len } => return Err(ReadError::TooLarge { len, max }),
                Assembled::BadSequence { expected, got } => {
                    return Err(ReadError::BadSequence { expected, got })
                }
            }
        }
    }

    /// Queues one logical packet; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        put_packet(&mut self.wbuf, seq, payload)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.try_flush()? {
            let queued = std::mem::take(&mut self.wbuf);
            let r = self.write_rest(&queued).await;
            self.wbuf = queued;
            self.wbuf.clear();
            r?;
        }
        Ok(())
    }

    /// Writes `bytes` as the peer takes them, each write waiting at most
    /// `write_timeout` for the peer to take some (a client that stops
    /// reading is given up on; one that reads slowly is not).
    pub async fn write_rest(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let Some(limit) = self.write_timeout else {
            return self.stream.write_all(bytes).await;
        };
        while !bytes.is_empty() {
            let n = tokio::time::timeout(limit, self.stream.write(bytes))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the peer took no bytes for {limit:?}"),
                    )
                })??;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Writes what the socket takes of the queue now, without waiting;
    /// whether that was all of it (then [`Self::flush`] has nothing to
    /// wait for).
    pub fn try_flush(&mut self) -> io::Result<bool> {
        if self.wbuf.is_empty() {
            return Ok(true);
        }
        let n = write_now(&self.stream, &self.wbuf)?;
        if n == self.wbuf.len() {
            self.wbuf.clear();
            Ok(true)
        } else {
            self.wbuf.advance(n);
            Ok(false)
        }
    }

    /// Queues and writes one packet; returns the next sequence id. (The
    /// copy into `wbuf` is cheaper than the alternative: `writev` of the
    /// header and the payload costs a loopback send about 300 ns more in
    /// the kernel than `send` of one buffer.)
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }

    /// Whether the peer closed or reset the connection, or sent something
    /// unasked (a server that kills a connection says so first), while it
    /// sat between commands. Never waits; with nothing pending, tokio's
    /// readiness answers without a system call. Bytes read are kept, and
    /// count again at the next call, so asking twice gives one answer.
    pub fn peer_gone(&mut self) -> bool {
        !self.rbuf.is_empty() || !matches!(self.try_fill(), Ok(0))
    }

    /// Drops both buffers entirely if empty (for connections that wait long).
    pub fn release_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ends of a loopback TCP connection.
    async fn pair() -> (Conn, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (Conn::new(a), l.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn a_packet_the_socket_cannot_take_at_once_arrives_whole() {
        let (mut conn, mut peer) = pair().await;
        // 12 MiB: one frame, more than the socket buffers hold, so the
        // first write takes part of it and the rest waits for the reader.
        let payload: Vec<u8> = (0..12 << 20).map(|i| (i % 251) as u8).collect();
        const HEADER_LEN: usize = crate::protocol::frame::HEADER_LEN;
        let want = payload.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; HEADER_LEN + want];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        assert_eq!(conn.send(7, &payload).await.unwrap(), 8);
        assert!(conn.wbuf.is_empty());
        let got = reader.await.unwrap();
        assert_eq!(&got[..HEADER_LEN], &[0x00, 0x00, 0xc0, 7]);
        assert!(got[HEADER_LEN..] == payload[..]);
        // And one that it takes at once.
        let (mut conn, mut peer) = pair().await;
        assert_eq!(conn.send(0, b"\x03SELECT 1").await.unwrap(), 1);
        let mut got = [0u8; 13];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x09\x00\x00\x00\x03SELECT 1");
    }
}
