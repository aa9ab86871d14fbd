//! Physical packet framing.
//!
//! Every MySQL packet travels as one or more frames: a 3-byte little-endian
//! payload length, a 1-byte sequence id, then the payload. A logical packet
//! of `0xFFFFFF` bytes or more is split into full frames followed by a final
//! shorter (possibly empty) frame.

use bytes::{BufMut, BytesMut};

/// Largest payload of one frame.
pub const MAX_FRAME: usize = 0xFF_FFFF;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 4;

/// The header of one physical frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes in this frame.
    pub len: usize,
    /// Sequence id of this frame.
    pub seq: u8,
}

impl FrameHeader {
    /// Reads a header from the start of `buf`, if four bytes are there.
    #[inline]
    pub fn parse(buf: &[u8]) -> Option<Self> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
        Some(Self { len, seq: buf[3] })
    }

    /// Whether the logical packet goes on in the next frame.
    #[inline]
    pub fn continues(&self) -> bool {
        self.len == MAX_FRAME
    }

    /// Header plus payload.
    #[inline]
    pub fn total(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// Appends `payload` to `dst` as one logical packet starting at sequence id
/// `seq`, split into frames as the protocol requires (including the empty
/// trailing frame after an exact multiple of `MAX_FRAME`). Returns the next
/// sequence id.
pub fn put_packet(dst: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    dst.reserve(payload.len() + HEADER_LEN * (1 + payload.len() / MAX_FRAME));
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME);
        dst.put_uint_le(n as u64, 3);
        dst.put_u8(seq);
        dst.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_FRAME {
            return seq;
        }
    }
}

/// Result of trying to take one logical packet out of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// Not all frames are here yet; at least `need` more bytes are wanted.
    Incomplete {
        /// Bytes wanted at least.
        need: usize,
    },
    /// A whole packet: its payload, the sequence id of its first frame and of
    /// its last frame, and how many bytes of the buffer it used.
    Packet {
        /// The payload, joined from all its frames.
        payload: Vec<u8>,
        /// Sequence id of the first frame.
        first_seq: u8,
        /// Sequence id of the last frame.
        last_seq: u8,
        /// Bytes of the buffer the frames take.
        consumed: usize,
    },
    /// The packet is larger than allowed.
    TooLarge {
        /// Payload bytes counted when the limit was passed.
        len: usize,
    },
    /// A frame's sequence id does not follow the one before it.
    BadSequence {
        /// The sequence id that should have come.
        expected: u8,
        /// The sequence id that came.
        got: u8,
    },
}

/// Gives the frames of the logical packet at the front of `buf` (those
/// here) sequence ids that follow its first frame's. Over the compressed
/// protocol frames carry no ids of use: Connector/C numbers every frame of
/// a command 0, and servers check only the compressed packets' ids.
pub fn renumber(buf: &mut [u8]) {
    let mut pos = 0;
    while let Some(h) = FrameHeader::parse(&buf[pos..]) {
        let next = pos + h.total();
        if !h.continues() || next + HEADER_LEN > buf.len() {
            return;
        }
        buf[next + 3] = h.seq.wrapping_add(1);
        pos = next;
    }
}

/// Takes one logical packet from the front of `buf` without consuming it,
/// refusing payloads larger than `max`.
pub fn assemble(buf: &[u8], max: usize) -> Assembled {
    // The common case: a packet in one frame, all of it here.
    if let Some(h) = FrameHeader::parse(buf) {
        if !h.continues() && h.len <= max && h.total() <= buf.len() {
            return Assembled::Packet {
                payload: buf[HEADER_LEN..h.total()].to_vec(),
                first_seq: h.seq,
                last_seq: h.seq,
                consumed: h.total(),
            };
        }
    }
    let mut pos = 0;
    let mut total = 0usize;
    let mut first_seq = None;
    let mut last_seq = 0u8;
    // First pass: check every frame is here and in sequence.
    loop {
        let Some(h) = FrameHeader::parse(&buf[pos..]) else {
            return Assembled::Incomplete {
                need: pos + HEADER_LEN - buf.len(),
            };
        };
        match first_seq {
            None => first_seq = Some(h.seq),
            Some(_) if h.seq != last_seq.wrapping_add(1) => {
                return Assembled::BadSequence {
                    expected: last_seq.wrapping_add(1),
                    got: h.seq,
                }
            }
            Some(_) => {}
        }
        last_seq = h.seq;
        total += h.len;
        if total > max {
            return Assembled::TooLarge { len: total };
        }
        if buf.len() < pos + h.total() {
            return Assembled::Incomplete {
                need: pos + h.total() - buf.len(),
            };
        }
        pos += h.total();
        if !h.continues() {
            break;
        }
    }
    let consumed = pos;
    let mut payload = Vec::with_capacity(total);
    let mut p = 0;
    while p < consumed {
        let Some(h) = FrameHeader::parse(&buf[p..]) else {
            break;
        };
        payload.extend_from_slice(&buf[p + HEADER_LEN..p + h.total()]);
        p += h.total();
    }
    Assembled::Packet {
        payload,
        first_seq: first_seq.unwrap_or(0),
        last_seq,
        consumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_numbered_zero_are_renumbered_to_follow_the_first() {
        // Two full frames and a last one, all numbered 0 (Connector/C's
        // commands over the compressed protocol), then the next packet.
        let payload = vec![7u8; 2 * MAX_FRAME + 5];
        let mut b = BytesMut::new();
        put_packet(&mut b, 0, &payload);
        put_packet(&mut b, 0, b"next");
        let (second, third) = (HEADER_LEN + MAX_FRAME, 2 * (HEADER_LEN + MAX_FRAME));
        b[second + 3] = 0;
        b[third + 3] = 0;
        assert!(matches!(
            assemble(&b, usize::MAX),
            Assembled::BadSequence {
                expected: 1,
                got: 0
            }
        ));
        renumber(&mut b);
        assert_eq!((b[second + 3], b[third + 3]), (1, 2));
        assert_eq!(
            b[third + HEADER_LEN + 5 + 3],
            0,
            "the next packet keeps its id"
        );
        match assemble(&b, usize::MAX) {
            Assembled::Packet {
                payload: p,
                first_seq: 0,
                last_seq: 2,
                ..
            } => assert!(p == payload),
            other => panic!("{:?}", std::mem::discriminant(&other)),
        }
    }

    #[test]
    fn small_packet_round_trip() {
        let mut b = BytesMut::new();
        let next = put_packet(&mut b, 7, b"hello");
        assert_eq!(next, 8);
        assert_eq!(&b[..4], &[5, 0, 0, 7]);
        match assemble(&b, 100) {
            Assembled::Packet {
                payload,
                first_seq,
                last_seq,
                consumed,
            } => {
                assert_eq!(payload, b"hello");
                assert_eq!((first_seq, last_seq, consumed), (7, 7, 9));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_multiple_gets_empty_trailer() {
        let payload = vec![0xab; MAX_FRAME];
        let mut b = BytesMut::new();
        let next = put_packet(&mut b, 255, &payload);
        assert_eq!(next, 1, "two frames, sequence wraps");
        assert_eq!(b.len(), MAX_FRAME + 8);
        assert_eq!(&b[MAX_FRAME + 4..], &[0, 0, 0, 0]);
        match assemble(&b, usize::MAX) {
            Assembled::Packet {
                payload: p,
                consumed,
                ..
            } => {
                assert_eq!(p.len(), MAX_FRAME);
                assert_eq!(consumed, b.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_oversize_before_it_arrives() {
        let mut b = BytesMut::new();
        b.put_uint_le(1000, 3);
        b.put_u8(0);
        assert_eq!(assemble(&b, 999), Assembled::TooLarge { len: 1000 });
    }

    #[test]
    fn wrong_sequence_in_continuation() {
        let mut b = BytesMut::new();
        put_packet(&mut b, 0, &vec![1; MAX_FRAME + 3]);
        b[MAX_FRAME + 4 + 3] = 9;
        assert_eq!(
            assemble(&b, usize::MAX),
            Assembled::BadSequence {
                expected: 1,
                got: 9
            }
        );
    }

    proptest! {
        #[test]
        fn assemble_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..600) {
            let _ = assemble(&data, max);
        }

        #[test]
        fn put_then_assemble_is_identity(len in 0usize..5000, seq in any::<u8>()) {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut b = BytesMut::new();
            put_packet(&mut b, seq, &payload);
            match assemble(&b, usize::MAX) {
                Assembled::Packet { payload: p, first_seq, consumed, .. } => {
                    prop_assert_eq!(p, payload);
                    prop_assert_eq!(first_seq, seq);
                    prop_assert_eq!(consumed, b.len());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
