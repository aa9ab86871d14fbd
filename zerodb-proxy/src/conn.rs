//! A TCP connection speaking MySQL frames, with buffers that an idle
//! connection gives back, in clear or over TLS.
//!
//! Over TLS, rustls holds the session and this drives it by hand: bytes
//! read from the socket go in through `read_tls`, and what they decrypt to
//! is drained into `rbuf`; bytes written go in through its `writer` and
//! out through `write_tls`. Reads and writes keep the shape they have in
//! clear (try now, wait only when the socket says so), so the relay does
//! not change with TLS.

use crate::protocol::frame::{assemble, put_packet, Assembled};
use bytes::{Buf, BytesMut};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How much a read asks for at least.
const READ_CHUNK: usize = 16 * 1024;
/// How much [`Conn::try_fill`] reads at least, into a buffer on the stack
/// when the connection holds no room.
const PROBE: usize = 64;

/// Writes what the socket takes of `buf` now, without waiting: how many
/// bytes, 0 when it is full.
#[inline(always)]
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
    /// The TLS session, once one was started on the socket.
    tls: Option<Box<rustls::Connection>>,
}

/// Writes to a socket without waiting (`WouldBlock` when it is full): what
/// rustls's `write_tls` writes through.
struct SocketNow<'a>(&'a TcpStream);

impl io::Write for SocketNow<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write that waited `limit` for the peer to take a byte (only client
/// connections have a `write_timeout`: `limits.net_write_timeout`).
fn write_timed_out(limit: std::time::Duration) -> io::Error {
    metrics::counter!("zerodb_limit_hits_total", "limit" => "net_write_timeout").increment(1);
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the peer took no bytes for {limit:?}"),
    )
}

/// A rustls error as an I/O error (a TLS alert or a protocol violation).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Moves the plaintext rustls has decrypted into `rbuf`: how many bytes;
/// `Closed` when the peer ended the session (close_notify) and nothing
/// came before it.
fn drain_plaintext(tls: &mut rustls::Connection, rbuf: &mut BytesMut) -> Result<usize, ReadError> {
    use std::io::Read;
    let mut total = 0;
    loop {
        let len = rbuf.len();
        rbuf.resize(len + READ_CHUNK, 0);
        let r = tls.reader().read(&mut rbuf[len..]);
        rbuf.truncate(len + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) if total == 0 => return Err(ReadError::Closed),
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) => return Err(e.into()),
        }
    }
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
            tls: None,
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
        if self.tls.is_some() {
            return self.fill_tls().await;
        }
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
        if self.tls.is_some() {
            return self.try_fill_tls();
        }
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
        if self.tls.is_some() {
            if !self.try_flush()? {
                self.write_rest(&[]).await?;
            }
            return Ok(());
        }
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
        if self.tls.is_some() {
            return self.write_rest_tls(bytes).await;
        }
        let Some(limit) = self.write_timeout else {
            return self.stream.write_all(bytes).await;
        };
        while !bytes.is_empty() {
            let n = tokio::time::timeout(limit, self.stream.write(bytes))
                .await
                .map_err(|_| write_timed_out(limit))??;
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
        if self.tls.is_some() {
            let queued = std::mem::take(&mut self.wbuf);
            let r = self.write_now(&queued);
            let taken = *r.as_ref().unwrap_or(&0);
            self.wbuf = queued;
            self.wbuf.advance(taken);
            r?;
            return Ok(self.wbuf.is_empty() && !self.output_pending());
        }
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

    /// Writes what the peer takes of `buf` now, without waiting: how many
    /// bytes were taken (in clear, by the socket; over TLS, by the
    /// session, which may still hold some of them encrypted: see
    /// [`Self::output_pending`]). The rest goes with [`Self::write_rest`].
    #[inline(always)]
    pub fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        // In clear, the socket call inlined into the relay (as before TLS
        // came); the TLS path stays out of line.
        if self.tls.is_none() {
            return write_now(&self.stream, buf);
        }
        self.write_now_tls(buf)
    }

    #[inline(never)]
    fn write_now_tls(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return write_now(&self.stream, buf);
        };
        let taken = io::Write::write(&mut tls.writer(), buf)?;
        self.send_tls_now()?;
        Ok(taken)
    }

    /// Whether bytes written wait, encrypted, for the socket to take them
    /// (never in clear: the socket holds what it took).
    #[inline(always)]
    pub fn output_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends the ciphertext the socket takes now: whether that was all.
    fn send_tls_now(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(true);
        };
        while tls.wants_write() {
            match tls.write_tls(&mut SocketNow(&self.stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Waits until the socket takes more, within `write_timeout`.
    async fn writable(&self) -> io::Result<()> {
        match self.write_timeout {
            None => self.stream.writable().await,
            Some(limit) => tokio::time::timeout(limit, self.stream.writable())
                .await
                .map_err(|_| write_timed_out(limit))?,
        }
    }

    /// [`Self::write_rest`] over TLS: `bytes` into the session as it takes
    /// them, and every encrypted byte out.
    async fn write_rest_tls(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        loop {
            if !bytes.is_empty() {
                let n = self.write_now(bytes)?;
                bytes = &bytes[n..];
            }
            if self.send_tls_now()? && bytes.is_empty() {
                return Ok(());
            }
            if self.output_pending() {
                self.writable().await?;
            }
        }
    }

    /// Reads the ciphertext the socket holds now into the session and
    /// decrypts it into `rbuf`: how many plaintext bytes.
    fn try_fill_tls(&mut self) -> Result<usize, ReadError> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(0);
        };
        let mut total = drain_plaintext(tls, &mut self.rbuf)?;
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let n = match self.stream.try_read(&mut buf) {
                Ok(0) => {
                    return if total > 0 {
                        Ok(total)
                    } else {
                        Err(ReadError::Closed)
                    }
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) => return Err(e.into()),
            };
            let mut cipher = &buf[..n];
            while !cipher.is_empty() {
                tls.read_tls(&mut cipher)?;
                let state = tls.process_new_packets().map_err(tls_error);
                // An alert rustls queued for the peer goes out even when
                // the session failed.
                while tls.wants_write() {
                    if tls.write_tls(&mut SocketNow(&self.stream)).is_err() {
                        break;
                    }
                }
                state?;
                total += drain_plaintext(tls, &mut self.rbuf)?;
            }
        }
    }

    /// [`Self::fill`] over TLS: waits until some plaintext came.
    async fn fill_tls(&mut self) -> Result<usize, ReadError> {
        loop {
            let n = self.try_fill_tls()?;
            if n > 0 {
                return Ok(n);
            }
            self.read_ready().await?;
        }
    }

    /// Starts TLS as the server on this connection and runs the handshake.
    /// Bytes already read (a client's ClientHello may have come with its
    /// SSL request) go into the session first.
    pub async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let mut tls = rustls::ServerConnection::new(config).map_err(tls_error)?;
        let mut early = &self.rbuf[..];
        while !early.is_empty() {
            tls.read_tls(&mut early)?;
            tls.process_new_packets().map_err(tls_error)?;
        }
        self.rbuf.clear();
        self.tls = Some(Box::new(tls.into()));
        self.tls_handshake().await
    }

    /// Starts TLS as the client on this connection (to a server that
    /// agreed to it) and runs the handshake, checking the server as
    /// `config` says, against `name`.
    pub async fn connect_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<()> {
        let tls = rustls::ClientConnection::new(config, name).map_err(tls_error)?;
        self.tls = Some(Box::new(tls.into()));
        self.tls_handshake().await
    }

    /// Runs the TLS handshake to its end.
    async fn tls_handshake(&mut self) -> io::Result<()> {
        loop {
            let Some(tls) = self.tls.as_deref() else {
                return Ok(());
            };
            if tls.wants_write() {
                if !self.send_tls_now()? {
                    self.writable().await?;
                }
                continue;
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            self.read_ready().await?;
            match self.try_fill_tls() {
                Ok(_) => {}
                Err(ReadError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string())),
            }
        }
    }

    /// Ends the connection: over TLS with close_notify first (within
    /// `write_timeout`), then the socket's write side.
    pub async fn shutdown(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let _ = self.write_rest_tls(&[]).await;
        }
        let _ = self.stream.shutdown().await;
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
