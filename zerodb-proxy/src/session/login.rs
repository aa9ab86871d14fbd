//! What a client says while logging in, parsed: the handshake response,
//! COM_CHANGE_USER, and the character sets a client cannot speak in. Pure
//! functions of the bytes, fuzzed through [`crate::fuzz`].

use crate::auth::Method;
use crate::errors::ClientError;
use crate::protocol::caps;
use crate::protocol::packets::{self, take_cstr};
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakeResponse;

/// The error MariaDB gives a client whose handshake collation belongs to a
/// character set it cannot speak in (ucs2, utf16, utf16le, utf32: not
/// ASCII-compatible), if `collation` is one.
pub(crate) fn refused_client_charset(collation: u8) -> Option<ClientError> {
    let charset = match collation {
        35 | 90 | 128..=151 | 159 => "ucs2",
        54 | 55 | 101..=124 => "utf16",
        56 | 62 => "utf16le",
        60 | 61 | 160..=183 => "utf32",
        _ => return None,
    };
    Some(ClientError::new(
        1231,
        "42000",
        format!("Variable 'character_set_client' can't be set to the value of '{charset}'"),
    ))
}

/// What a client's handshake response says.
pub(crate) struct Login41 {
    pub client_caps: u32,
    pub user: String,
    pub db: Option<Vec<u8>>,
    pub response: Vec<u8>,
    pub method: Option<Method>,
    pub collation: u8,
    pub mariadb_caps: u32,
}

/// The fields of a COM_CHANGE_USER (after the command byte).
pub(crate) struct ChangeUser {
    pub user: String,
    pub auth: Vec<u8>,
    pub db: Option<Vec<u8>>,
    pub collation: Option<u8>,
    pub plugin: Option<Vec<u8>>,
}

impl Login41 {
    /// Parses a HandshakeResponse41 (the client's answer to the greeting,
    /// after the SSL request if any); `None` when it is malformed.
    pub fn parse(p: &[u8]) -> Option<Self> {
        let parsed = ParseBuf(p).parse::<HandshakeResponse<'_>>(()).ok()?;
        Some(Self {
            client_caps: packets::u32_at(p, 0)?,
            user: String::from_utf8_lossy(parsed.user()).into_owned(),
            db: parsed
                .db_name()
                .filter(|d| !d.is_empty())
                .map(<[u8]>::to_vec),
            response: parsed.scramble_buf().to_vec(),
            method: match parsed.auth_plugin() {
                Some(plugin) => Method::from_name(plugin.as_bytes()),
                None => Some(Method::Native),
            },
            collation: parsed.collation(),
            mariadb_caps: parsed.mariadb_ext_capabilities().bits(),
        })
    }
}

impl ChangeUser {
    pub fn parse(p: &[u8], client_caps: u32) -> Option<Self> {
        let (user, rest) = take_cstr(p)?;
        let (auth, rest) = if client_caps & caps::SECURE_CONNECTION != 0 {
            let n = usize::from(*rest.first()?);
            (rest.get(1..1 + n)?.to_vec(), rest.get(1 + n..)?)
        } else {
            let (a, r) = take_cstr(rest)?;
            (a.to_vec(), r)
        };
        let (db, rest) = take_cstr(rest)?;
        let (collation, plugin) = if rest.len() >= 2 {
            let c = rest[0];
            let plugin = if client_caps & caps::PLUGIN_AUTH != 0 {
                take_cstr(&rest[2..]).map(|(name, _)| name.to_vec())
            } else {
                None
            };
            (Some(c), plugin)
        } else {
            (None, None)
        };
        Some(Self {
            user: String::from_utf8_lossy(user).into_owned(),
            auth,
            db: (!db.is_empty()).then(|| db.to_vec()),
            collation,
            plugin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::refused_client_charset;

    #[test]
    fn charsets_a_client_cannot_speak_in() {
        for (collation, refused) in [
            (8, None),
            (33, None),
            (45, None),
            (63, None),
            (35, Some("ucs2")),
            (159, Some("ucs2")),
            (152, None),
            (101, Some("utf16")),
            (62, Some("utf16le")),
            (183, Some("utf32")),
            (184, None),
        ] {
            let e = refused_client_charset(collation);
            assert_eq!(
                e.as_ref().map(|e| e.code),
                refused.map(|_| 1231),
                "{collation}"
            );
            if let (Some(e), Some(name)) = (e, refused) {
                assert!(e.message.ends_with(&format!("'{name}'")), "{}", e.message);
            }
        }
    }
}
