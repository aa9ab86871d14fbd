//! A TCP connection speaking MySQL frames, with buffers that an idle
//! connection gives back: in clear, over TLS, compressed, or both.
//!
//! Over TLS, rustls holds the session and this drives it by hand: bytes
//! read from the socket go in through `read_tls`, and what they decrypt to
//! is drained into `rbuf`; bytes written go in through its `writer` and
//! out through `write_tls`. Compressed (a client that asked for
//! `CLIENT_COMPRESS`), what comes in is unpacked into `rbuf` and what goes
//! out is packed first ([`crate::protocol::compress`]). Reads and writes
//! keep the shape they have in clear (try now, wait only when the socket
//! says so), so the relay does not change with either; in clear, one test
//! of one field tells the hot path it has nothing else to do.

use crate::protocol::compress::{InflateError, Zlib};
use crate::protocol::frame::{assemble, put_packet, renumber, Assembled};
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
    /// TLS and compression, once either was started (`None`: in clear).
    layers: Option<Box<Layers>>,
}

/// What lies between the frames and the socket when not in clear.
#[derive(Debug, Default)]
struct Layers {
    /// The TLS session, once one was started on the socket.
    tls: Option<rustls::Connection>,
    /// The compressed protocol, once the login agreed to it.
    zlib: Option<Zlib>,
}

impl Layers {
    /// Whether bytes taken wait, packed or encrypted, for the socket.
    fn pending(&self) -> bool {
        self.zlib.as_ref().is_some_and(|z| !z.out.is_empty())
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
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
    /// A compressed packet could not be unpacked.
    #[error(transparent)]
    Compressed(#[from] InflateError),
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
            layers: None,
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
    ///
    /// One loop over two awaits for both paths, rather than the layered
    /// reader as a future of its own: a nested future's states cost the
    /// clear path about 15 instructions per statement
    /// (`scripts/callgrind.sh`).
    pub async fn fill(&mut self, want: usize) -> Result<usize, ReadError> {
        let mut ready = false;
        loop {
            if self.layers.is_some() {
                let n = self.try_fill_layered()?;
                if n > 0 {
                    return Ok(n);
                }
            } else if ready || self.rbuf.capacity() > 0 {
                self.rbuf.reserve(want.max(READ_CHUNK));
                let n = self.stream.read_buf(&mut self.rbuf).await?;
                if n == 0 {
                    return Err(ReadError::Closed);
                }
                return Ok(n);
            }
            self.read_ready().await?;
            ready = true;
        }
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
        if self.layers.is_some() {
            return self.try_fill_layered();
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
                Assembled::BadSequence { .. } if self.is_compressed() => {
                    renumber(&mut self.rbuf);
                }
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
        if self.layers.is_some() {
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
        if self.layers.is_some() {
            return self.write_rest_layered(bytes).await;
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
        if self.layers.is_some() {
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
    /// bytes were taken (in clear, by the socket; otherwise by the layers,
    /// which may still hold some of them packed or encrypted: see
    /// [`Self::output_pending`]). The rest goes with [`Self::write_rest`].
    #[inline(always)]
    pub fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        // In clear, the socket call inlined into the relay (as before TLS
        // came); the layered path stays out of line.
        if self.layers.is_none() {
            return write_now(&self.stream, buf);
        }
        self.write_now_layered(buf)
    }

    #[inline(never)]
    fn write_now_layered(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(layers) = self.layers.as_deref_mut() else {
            return write_now(&self.stream, buf);
        };
        let taken = match (&mut layers.zlib, &mut layers.tls) {
            (Some(zlib), _) => {
                // All of it, packed; what the transport does not take
                // now stays packed in `out`.
                zlib.deflate(buf);
                buf.len()
            }
            (None, Some(tls)) => io::Write::write(&mut tls.writer(), buf)?,
            (None, None) => write_now(&self.stream, buf)?,
        };
        send_now(&self.stream, layers)?;
        Ok(taken)
    }

    /// Whether bytes taken wait, packed or encrypted, for the socket to
    /// take them (never in clear: the socket holds what it took).
    #[inline(always)]
    pub fn output_pending(&self) -> bool {
        self.layers.as_deref().is_some_and(Layers::pending)
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.layers.as_ref().is_some_and(|l| l.tls.is_some())
    }

    /// Whether the connection speaks the compressed protocol.
    pub fn is_compressed(&self) -> bool {
        self.layers.as_ref().is_some_and(|l| l.zlib.is_some())
    }

    /// Starts the compressed protocol: everything read or written from now
    /// on is packed (the login's OK went out before it, as on MariaDB).
    /// Bytes already read are the first packed ones.
    pub fn start_compression(&mut self) {
        let layers = self.layers.get_or_insert_with(Box::default);
        layers.zlib = Some(Zlib::after(std::mem::take(&mut self.rbuf)));
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

    /// Hands on what the layers hold that the socket takes now: whether
    /// that was all.
    fn send_now(&mut self) -> io::Result<bool> {
        match self.layers.as_deref_mut() {
            Some(layers) => send_now(&self.stream, layers),
            None => Ok(true),
        }
    }

    /// [`Self::write_rest`] through the layers: `bytes` in as they take
    /// them, and everything out.
    async fn write_rest_layered(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        loop {
            if !bytes.is_empty() {
                let n = self.write_now(bytes)?;
                bytes = &bytes[n..];
            }
            if self.send_now()? && bytes.is_empty() {
                return Ok(());
            }
            if self.output_pending() {
                self.writable().await?;
            }
        }
    }

    /// Reads what the socket holds now through the layers into `rbuf`:
    /// how many plain bytes came.
    #[inline(never)]
    fn try_fill_layered(&mut self) -> Result<usize, ReadError> {
        let Some(layers) = self.layers.as_deref_mut() else {
            return Ok(0);
        };
        let Some(zlib) = layers.zlib.as_mut() else {
            return read_transport(&self.stream, layers.tls.as_mut(), &mut self.rbuf);
        };
        let read = read_transport(&self.stream, layers.tls.as_mut(), &mut zlib.raw);
        let n = zlib.inflate(&mut self.rbuf)?;
        match read {
            // Bytes unpacked come first; the end shows at the next read.
            Err(ReadError::Closed) if n > 0 => Ok(n),
            Err(e) => Err(e),
            Ok(_) => Ok(n),
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
        self.layers.get_or_insert_with(Box::default).tls = Some(tls.into());
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
        self.layers.get_or_insert_with(Box::default).tls = Some(tls.into());
        self.tls_handshake().await
    }

    /// Runs the TLS handshake to its end.
    async fn tls_handshake(&mut self) -> io::Result<()> {
        loop {
            let Some(tls) = self.layers.as_deref().and_then(|l| l.tls.as_ref()) else {
                return Ok(());
            };
            if tls.wants_write() {
                if !self.send_now()? {
                    self.writable().await?;
                }
                continue;
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            self.read_ready().await?;
            match self.try_fill_layered() {
                Ok(_) => {}
                Err(ReadError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string())),
            }
        }
    }

    /// Ends the connection: what the layers hold and, over TLS,
    /// close_notify go out first (within `write_timeout`), then the
    /// socket's write side.
    pub async fn shutdown(&mut self) {
        if let Some(layers) = self.layers.as_deref_mut() {
            if let Some(tls) = layers.tls.as_mut() {
                tls.send_close_notify();
            }
            let _ = self.write_rest_layered(&[]).await;
        }
        let _ = self.stream.shutdown().await;
    }

    /// Drops both buffers entirely if empty (for connections that wait
    /// long), and the compression state.
    pub fn release_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        if let Some(zlib) = self.layers.as_deref_mut().and_then(|l| l.zlib.as_mut()) {
            zlib.release();
        }
    }
}

/// Hands what `layers` hold to the socket, as much as it takes now:
/// packed bytes into TLS (or the socket), ciphertext into the socket.
/// Whether that was all.
fn send_now(stream: &TcpStream, layers: &mut Layers) -> io::Result<bool> {
    loop {
        let mut moved = 0;
        if let Some(zlib) = layers.zlib.as_mut().filter(|z| !z.out.is_empty()) {
            moved = match layers.tls.as_mut() {
                Some(tls) => io::Write::write(&mut tls.writer(), &zlib.out)?,
                None => write_now(stream, &zlib.out)?,
            };
            zlib.sent(moved);
        }
        if let Some(tls) = layers.tls.as_mut() {
            while tls.wants_write() {
                match tls.write_tls(&mut SocketNow(stream)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        }
        if !layers.pending() {
            return Ok(true);
        }
        if moved == 0 {
            // The socket is full (packed bytes in clear wait for it).
            return Ok(false);
        }
    }
}

/// Reads what the socket holds now into `buf` (`WouldBlock` when nothing
/// is there), for the layers. Not through tokio's `try_read`/`try_read_buf`,
/// which the clear path calls: with one caller each, they stay inlined
/// there (a second caller took `try_io` out of line: about 25 more
/// instructions per statement, measured with `scripts/callgrind.sh`).
fn read_raw(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    stream.try_io(tokio::io::Interest::READABLE, || {
        (&*socket2::SockRef::from(stream)).read(buf)
    })
}

/// Reads what the socket holds now into `into`, decrypted when `tls` is
/// there: how many bytes; `Closed` at end of stream with none.
fn read_transport(
    stream: &TcpStream,
    tls: Option<&mut rustls::Connection>,
    into: &mut BytesMut,
) -> Result<usize, ReadError> {
    let mut buf = [0u8; READ_CHUNK];
    let Some(tls) = tls else {
        return match read_raw(stream, &mut buf) {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.into()),
        };
    };
    let mut total = drain_plaintext(tls, into)?;
    loop {
        let n = match read_raw(stream, &mut buf) {
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
                if tls.write_tls(&mut SocketNow(stream)).is_err() {
                    break;
                }
            }
            state?;
            total += drain_plaintext(tls, into)?;
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
