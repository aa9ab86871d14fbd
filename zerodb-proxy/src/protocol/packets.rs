//! The packets the proxy writes itself and the fields it reads.

/// Reads a length-encoded integer; returns the value and the bytes it used.
#[inline]
pub fn read_lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let le = |n: usize| -> Option<(u64, usize)> {
        let bytes = b.get(1..1 + n)?;
        let mut v = 0u64;
        for (i, x) in bytes.iter().enumerate() {
            v |= u64::from(*x) << (8 * i);
        }
        Some((v, 1 + n))
    };
    match first {
        0..=0xfa => Some((u64::from(first), 1)),
        0xfc => le(2),
        0xfd => le(3),
        0xfe => le(8),
        // 0xfb is NULL and 0xff an error marker: neither is an integer.
        _ => None,
    }
}

/// A length-encoded string at the front of `b`, and what follows it.
pub fn read_lenenc_str(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, at) = read_lenenc(b)?;
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(at..end)?, b.get(end..)?))
}

/// The type and character set of a column definition (protocol 4.1,
/// MariaDB's extended metadata allowed).
pub fn column_type(def: &[u8]) -> Option<ColumnType> {
    let mut rest = def;
    // catalog, schema, table, org_table, name, org_name
    for _ in 0..6 {
        rest = read_lenenc_str(rest)?.1;
    }
    if rest.first() != Some(&0x0c) {
        rest = read_lenenc_str(rest)?.1; // extended metadata
    }
    let fixed = rest.get(1..)?;
    Some(ColumnType {
        charset: u16::from_le_bytes([*fixed.first()?, *fixed.get(1)?]),
        kind: *fixed.get(6)?,
    })
}

/// What a column definition says of its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnType {
    /// The collation id of text values (63: binary).
    pub charset: u16,
    /// `MYSQL_TYPE_*`.
    pub kind: u8,
}

/// Appends a length-encoded integer.
pub fn put_lenenc(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => buf.push(v as u8),
        0xfb..=0xffff => {
            buf.push(0xfc);
            buf.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            buf.push(0xfd);
            buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xfe);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_str(buf: &mut Vec<u8>, s: &[u8]) {
    put_lenenc(buf, s.len() as u64);
    buf.extend_from_slice(s);
}

/// Payload of an OK packet.
pub fn ok(affected_rows: u64, last_insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(11);
    p.push(0x00);
    put_lenenc(&mut p, affected_rows);
    put_lenenc(&mut p, last_insert_id);
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&warnings.to_le_bytes());
    p
}

/// Payload of an EOF packet (or, when the client deprecated EOF, of the OK
/// packet with an 0xFE header that replaces it).
pub fn eof(status: u16, deprecate_eof: bool) -> Vec<u8> {
    if deprecate_eof {
        let mut p = ok(0, 0, status, 0);
        p[0] = 0xfe;
        p
    } else {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }
}

/// Payload of an ERR packet (protocol 4.1 form, with SQLSTATE).
pub fn err(code: u16, sql_state: &str, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(0xff);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let state = sql_state.as_bytes();
    for i in 0..5 {
        p.push(state.get(i).copied().unwrap_or(b'0'));
    }
    p.extend_from_slice(message.as_bytes());
    p
}

/// Status flags of an OK packet (header 0x00, or 0xFE when it ends a result
/// set under `CLIENT_DEPRECATE_EOF`).
#[inline]
pub fn ok_status(p: &[u8]) -> Option<u16> {
    let (_, a) = read_lenenc(p.get(1..)?)?;
    let (_, b) = read_lenenc(p.get(1 + a..)?)?;
    let at = 1 + a + b;
    Some(u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Status flags of a classic EOF packet.
#[inline]
pub fn eof_status(p: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*p.get(3)?, *p.get(4)?]))
}

/// The fields of an ERR packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrPacket {
    /// The error code.
    pub code: u16,
    /// The SQLSTATE (`HY000` when the packet has none).
    pub state: String,
    /// The human-readable message.
    pub message: String,
}

/// Parses an ERR packet.
pub fn parse_err(p: &[u8]) -> Option<ErrPacket> {
    if p.first() != Some(&0xff) || p.len() < 3 {
        return None;
    }
    let code = u16::from_le_bytes([p[1], p[2]]);
    let (state, msg) = match p.get(3..9) {
        Some([b'#', state @ ..]) => (String::from_utf8_lossy(state).into_owned(), &p[9..]),
        _ => ("HY000".to_string(), &p[3..]),
    };
    Some(ErrPacket {
        code,
        state,
        message: String::from_utf8_lossy(msg).into_owned(),
    })
}

/// Whether a response packet is an ERR packet.
#[inline]
pub fn is_err(p: &[u8]) -> bool {
    p.first() == Some(&0xff)
}

/// Whether a response packet is an OK packet.
#[inline]
pub fn is_ok(p: &[u8]) -> bool {
    p.first() == Some(&0x00) && p.len() >= 7
}

/// Reads a little-endian u32 at `at`.
#[inline]
pub fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    let b = p.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a little-endian u16 at `at`.
#[inline]
pub fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    let b = p.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Splits a NUL-terminated string off the front of `p`.
pub fn take_cstr(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = p.iter().position(|&b| b == 0)?;
    Some((&p[..end], &p[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ok_and_eof_status_round_trip() {
        assert_eq!(ok_status(&ok(300, 70000, 0x0203, 1)), Some(0x0203));
        assert_eq!(ok_status(&eof(0x0022, true)), Some(0x0022));
        assert_eq!(eof_status(&eof(0x0009, false)), Some(0x0009));
    }

    #[test]
    fn err_round_trip() {
        let p = err(1045, "28000", "Access denied");
        let e = parse_err(&p).unwrap();
        assert_eq!(
            (e.code, e.state.as_str(), e.message.as_str()),
            (1045, "28000", "Access denied")
        );
        assert_eq!(&p[3..9], b"#28000");
    }

    proptest! {
        #[test]
        fn lenenc_round_trip(v in any::<u64>()) {
            let mut b = Vec::new();
            put_lenenc(&mut b, v);
            prop_assert_eq!(read_lenenc(&b), Some((v, b.len())));
        }

        #[test]
        fn readers_never_panic(p in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = ok_status(&p);
            let _ = eof_status(&p);
            let _ = parse_err(&p);
            let _ = read_lenenc(&p);
            let _ = take_cstr(&p);
        }
    }
}
