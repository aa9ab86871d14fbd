//! The compressed protocol (`CLIENT_COMPRESS`), between a client and the
//! proxy.
//!
//! Once the login's OK has gone out, both directions travel as compressed
//! packets: a 7-byte header (3 bytes of body length, a sequence id of its
//! own, 3 bytes of length once inflated, 0 when the body is not deflated)
//! and a zlib body holding any run of ordinary frames: a frame may start in
//! one compressed packet and end in the next. The proxy unpacks what a
//! client sends into plain frames and packs what it sends; the relay, the
//! parsers and the backends see plain frames only (backend connections are
//! never compressed).
//!
//! Sequence ids: a client starts each command's compressed packets at 0, and
//! the answer's continue from the last one it sent. The frames inside keep
//! their own ids, which MariaDB's server and Connector/C do not check under
//! compression (they follow the compressed ones); the proxy's stay those
//! the session gives them.
//!
//! A compressed packet the proxy sends holds whole frames: a frame is
//! packed once all of it was given, and only one too large for a single
//! compressed packet spans two, as from MariaDB's server (MySQL
//! Connector/Python 9 reads a frame from at most two: one spread over more
//! comes out cut short, silently). A session that relays a large row thus
//! holds that row's frame, up to 16 MiB, where in clear it streams it.
//!
//! Reading uses `mysql_common`'s decoder. Writing is done here: its
//! `compress` (0.38.2) truncates the deflate stream of a chunk that does
//! not shrink (random or already compressed data of 50 bytes or more), so
//! the peer fails to inflate it. As MariaDB does, a chunk whose deflated
//! form is not smaller goes out as it is.

use super::frame::{FrameHeader, MAX_FRAME};
use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, FlushCompress, Status};
use mysql_common::proto::codec::{error::PacketCodecError, ChunkInfo, CompDecoder};

/// Bytes of a compressed packet's header.
pub const HEADER_LEN: usize = 7;

/// Below this, a chunk goes out as it is (MariaDB's `MIN_COMPRESS_LENGTH`).
const MIN_COMPRESS: usize = 50;

/// zlib level: 1, the fastest. The relay compresses every byte a
/// compressed session receives, so the proxy's CPU per byte matters more
/// than the last few percent of ratio (MariaDB's server uses 6).
const LEVEL: u32 = 1;

/// Why bytes from a compressed peer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    /// A header says more than the protocol allows.
    #[error("compressed packet: {0}")]
    Header(&'static str),
    /// The body does not inflate to the length its header gives.
    #[error("compressed packet does not inflate: {0}")]
    Body(std::io::Error),
}

/// One direction of packing and one of unpacking, for one connection.
pub struct Zlib {
    /// Compressed bytes read and not yet a whole compressed packet.
    pub raw: BytesMut,
    /// Compressed packets made and not yet handed to the transport.
    pub out: BytesMut,
    /// Plain bytes given and not yet packed: the start of a frame whose
    /// end has not come.
    held: BytesMut,
    /// Sequence id of the next compressed packet sent.
    seq: u8,
    /// The unpacking state: which packet is being read.
    decoder: CompDecoder,
    /// The deflate state, kept while the connection is busy (it is about
    /// 300 KiB: [`Self::release`] drops it when the connection idles).
    deflate: Option<Box<Compress>>,
}

impl Default for Zlib {
    fn default() -> Self {
        Self {
            raw: BytesMut::new(),
            out: BytesMut::new(),
            held: BytesMut::new(),
            seq: 0,
            decoder: CompDecoder::Idle,
            deflate: None,
        }
    }
}

impl std::fmt::Debug for Zlib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zlib")
            .field("raw", &self.raw.len())
            .field("out", &self.out.len())
            .field("held", &self.held.len())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Zlib {
    /// Starts with `raw`: compressed bytes already read.
    pub fn after(raw: BytesMut) -> Self {
        Self {
            raw,
            ..Self::default()
        }
    }

    /// Unpacks every whole compressed packet in [`Self::raw`] onto the end
    /// of `plain`: how many plain bytes that added. The next packet sent
    /// follows the last one read.
    pub fn inflate(&mut self, plain: &mut BytesMut) -> Result<usize, InflateError> {
        let before = plain.len();
        // A body is at most 2^24 - 1 bytes either way: the header's limit.
        while let Some(info) = self
            .decoder
            .decode(&mut self.raw, plain, MAX_FRAME)
            .map_err(|e| match e {
                PacketCodecError::Io(e) => InflateError::Body(e),
                PacketCodecError::PacketTooLarge => InflateError::Header("too large"),
                PacketCodecError::BadCompressedPacketHeader => {
                    InflateError::Header("an empty body said to inflate to bytes")
                }
                PacketCodecError::PacketsOutOfSync => InflateError::Header("out of sync"),
            })?
        {
            let (ChunkInfo::Last(seq) | ChunkInfo::Middle(seq)) = info;
            self.seq = seq.wrapping_add(1);
        }
        if self.raw.is_empty() {
            // Starts over at the front, without taking the room back.
            self.raw.clear();
        }
        Ok(plain.len() - before)
    }

    /// Packs the whole frames of `plain` (after what was held) into
    /// compressed packets at the end of [`Self::out`], and holds the start
    /// of a frame cut short until the rest of it comes.
    pub fn deflate(&mut self, plain: &[u8]) {
        if self.held.is_empty() {
            let whole = whole_frames(plain);
            self.pack(&plain[..whole]);
            self.held.extend_from_slice(&plain[whole..]);
            return;
        }
        self.held.extend_from_slice(plain);
        let held = std::mem::take(&mut self.held);
        let whole = whole_frames(&held);
        self.pack(&held[..whole]);
        self.held = held;
        if whole == self.held.len() {
            self.held.clear();
        } else {
            self.held.advance(whole);
        }
    }

    /// Packs `plain` into compressed packets at the end of [`Self::out`].
    fn pack(&mut self, plain: &[u8]) {
        for chunk in plain.chunks(MAX_FRAME) {
            let seq = self.seq;
            self.seq = seq.wrapping_add(1);
            let start = self.out.len();
            if chunk.len() >= MIN_COMPRESS {
                let z = self
                    .deflate
                    .get_or_insert_with(|| Box::new(Compress::new(Compression::new(LEVEL), true)));
                z.reset();
                // Room for as many bytes as the chunk: a deflated form that
                // does not fit is not smaller, and is not sent.
                self.out.resize(start + HEADER_LEN + chunk.len(), 0);
                let done = z.compress(
                    chunk,
                    &mut self.out[start + HEADER_LEN..],
                    FlushCompress::Finish,
                );
                let deflated = usize::try_from(z.total_out()).unwrap_or(usize::MAX);
                if matches!(done, Ok(Status::StreamEnd)) && deflated < chunk.len() {
                    self.out.truncate(start + HEADER_LEN + deflated);
                    put_header(&mut self.out[start..], deflated, seq, chunk.len());
                    continue;
                }
                self.out.truncate(start);
            }
            self.out.reserve(HEADER_LEN + chunk.len());
            self.out.put_bytes(0, HEADER_LEN);
            put_header(&mut self.out[start..], chunk.len(), seq, 0);
            self.out.put_slice(chunk);
        }
    }

    /// Marks `n` bytes of [`Self::out`] as handed on.
    pub fn sent(&mut self, n: usize) {
        if n == self.out.len() {
            self.out.clear();
        } else {
            self.out.advance(n);
        }
    }

    /// Gives back the buffers and the deflate state when nothing waits in
    /// them (a connection that idles).
    pub fn release(&mut self) {
        if self.held.is_empty() {
            self.held = BytesMut::new();
        }
        if self.raw.is_empty() {
            self.raw = BytesMut::new();
        }
        if self.out.is_empty() {
            self.out = BytesMut::new();
        }
        self.deflate = None;
    }
}

/// How many bytes at the front of `plain` are whole frames.
fn whole_frames(plain: &[u8]) -> usize {
    let mut end = 0;
    while let Some(h) = FrameHeader::parse(&plain[end..]) {
        if plain.len() - end < h.total() {
            break;
        }
        end += h.total();
    }
    end
}

/// Writes a compressed packet's header at the front of `dst`.
fn put_header(dst: &mut [u8], body: usize, seq: u8, inflated: usize) {
    dst[..3].copy_from_slice(&(body as u32).to_le_bytes()[..3]);
    dst[3] = seq;
    dst[4..7].copy_from_slice(&(inflated as u32).to_le_bytes()[..3]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that do not shrink under deflate.
    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `payload` as frames (of at most 1000 bytes: any size will do).
    fn frames(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in payload.chunks(1000).enumerate() {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes()[..3]);
            out.push(i as u8);
            out.extend_from_slice(chunk);
        }
        out
    }

    fn round_trip(plain: &[u8]) -> (Vec<u8>, usize) {
        let mut a = Zlib::default();
        a.pack(plain);
        let sent = a.out.len();
        let mut b = Zlib::default();
        b.raw.extend_from_slice(&a.out);
        let mut got = BytesMut::new();
        assert_eq!(b.inflate(&mut got).unwrap(), plain.len());
        assert!(b.raw.is_empty());
        (got.to_vec(), sent)
    }

    #[test]
    fn what_is_packed_unpacks_to_the_same_bytes() {
        let text = b"SELECT * FROM sbtest1 WHERE id = 42; ".repeat(500);
        let (got, sent) = round_trip(&text);
        assert_eq!(got, text);
        assert!(sent < text.len() / 10, "text shrinks: {sent} bytes");
        for n in [0, 1, 49, 50, 60, 100, 20_000] {
            let data = noise(n);
            let (got, sent) = round_trip(&data);
            assert_eq!(got, data, "{n} bytes of noise");
            let chunks = n.div_ceil(MAX_FRAME);
            assert_eq!(sent, n + HEADER_LEN * chunks, "noise goes out as it is");
        }
    }

    #[test]
    fn more_than_one_body_is_split_and_numbered() {
        let mut z = Zlib {
            seq: 254,
            ..Zlib::default()
        };
        let data = noise(MAX_FRAME + 10);
        z.pack(&data);
        assert_eq!(z.out[3], 254);
        assert_eq!(z.out[HEADER_LEN + MAX_FRAME + 3], 255);
        assert_eq!(z.seq, 0);
        let mut peer = Zlib {
            raw: z.out.split(),
            ..Zlib::default()
        };
        let mut got = BytesMut::new();
        peer.inflate(&mut got).unwrap();
        assert_eq!(got[..], data[..]);
        assert_eq!(peer.seq, 0, "answers follow the last packet read");
    }

    #[test]
    fn frames_are_packed_once_whole_and_never_spread_over_more_than_two() {
        let text = frames(&b"row data, ".repeat(3000));
        let mut z = Zlib::default();
        // Given in pieces that cut frames anywhere.
        for piece in text.chunks(777) {
            z.deflate(piece);
            assert!(z.held.len() < 1004, "at most one frame's start held");
        }
        assert!(z.held.is_empty());
        let mut peer = Zlib::default();
        let mut got = BytesMut::new();
        // Each compressed packet unpacks to whole frames.
        while !z.out.is_empty() {
            let len =
                7 + (z.out[0] as usize | (z.out[1] as usize) << 8 | (z.out[2] as usize) << 16);
            peer.raw.extend_from_slice(&z.out.split_to(len));
            let before = got.len();
            peer.inflate(&mut got).unwrap();
            assert_eq!(whole_frames(&got[before..]), got.len() - before);
        }
        assert_eq!(got[..], text[..]);
        // A frame too large for one compressed packet spans two.
        let mut big = vec![0xff, 0xff, 0xff, 0];
        big.extend(noise(MAX_FRAME));
        big.extend([0, 0, 0, 1]);
        let mut z = Zlib::default();
        for piece in big.chunks(1 << 16) {
            z.deflate(piece);
        }
        let first = HEADER_LEN + MAX_FRAME;
        assert_eq!(
            z.out.len(),
            first + HEADER_LEN + 8,
            "two compressed packets"
        );
        assert_eq!((z.out[3], z.out[first + 3]), (0, 1));
    }

    #[test]
    fn a_packet_arriving_in_pieces_is_unpacked_once_whole() {
        let mut a = Zlib::default();
        a.pack(&b"abc".repeat(100));
        let wire = a.out.to_vec();
        let mut b = Zlib::default();
        let mut got = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            b.raw.put_u8(*byte);
            let n = b.inflate(&mut got).unwrap();
            assert_eq!(n > 0, i == wire.len() - 1);
        }
        assert_eq!(got[..], b"abc".repeat(100)[..]);
    }

    #[test]
    fn a_body_that_does_not_inflate_to_its_length_is_refused() {
        let mut a = Zlib::default();
        a.pack(&b"x".repeat(1000));
        // Says 1001 bytes once inflated.
        let mut wire = a.out.clone();
        wire[4] = 0xe9;
        let mut b = Zlib {
            raw: wire,
            ..Zlib::default()
        };
        assert!(matches!(
            b.inflate(&mut BytesMut::new()),
            Err(InflateError::Body(_))
        ));
        // Garbage said to be deflated.
        let mut b = Zlib::default();
        b.raw.extend_from_slice(&[3, 0, 0, 0, 10, 0, 0, 1, 2, 3]);
        assert!(b.inflate(&mut BytesMut::new()).is_err());
        // No body, yet bytes once inflated.
        let mut b = Zlib::default();
        b.raw.extend_from_slice(&[0, 0, 0, 0, 10, 0, 0]);
        assert!(matches!(
            b.inflate(&mut BytesMut::new()),
            Err(InflateError::Header(_))
        ));
    }
}
