//! Authenticating clients against the proxy's accounts (its `users` list,
//! or under `auth: backend` the datasources' own).
//!
//! For an account given with its password the proxy checks a
//! `mysql_native_password` scramble and a `caching_sha2_password` fast-auth
//! scramble directly; with the plaintext at hand there is never a cache
//! miss, so caching_sha2's full (RSA or TLS) exchange is not needed. For an
//! account given as a `mysql_native_password` hash (`*` and
//! HEX(SHA1(SHA1(password))), as `mysql.user` shows it) only a native
//! scramble can be checked: such clients are switched to that method.

use mysql_common::auth::plugins::{
    caching_sha2_password::scramble_sha256, mysql_native_password::scramble_native,
};
use rand::Rng;

/// Name of the `mysql_native_password` plugin.
pub const NATIVE: &str = "mysql_native_password";
/// Name of the `caching_sha2_password` plugin.
pub const CACHING_SHA2: &str = "caching_sha2_password";

/// Length of the salt (nonce) sent in the handshake.
pub const SALT_LEN: usize = 20;

/// A fresh random salt. Bytes avoid NUL (the handshake carries the salt as a
/// NUL-terminated string) and stay printable, as MySQL's do.
pub fn new_salt() -> [u8; SALT_LEN] {
    let mut rng = rand::rng();
    let mut s = [0u8; SALT_LEN];
    for b in &mut s {
        *b = rng.random_range(0x21..0x7f);
    }
    s
}

/// The authentication methods the proxy checks itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `mysql_native_password`: a SHA-1 scramble.
    Native,
    /// `caching_sha2_password`: a SHA-256 scramble, checked by fast auth.
    CachingSha2,
}

impl Method {
    /// The method an authentication plugin name stands for, if the proxy
    /// checks it.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"mysql_native_password" => Some(Self::Native),
            b"caching_sha2_password" => Some(Self::CachingSha2),
            _ => None,
        }
    }

    /// The method's plugin name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => NATIVE,
            Self::CachingSha2 => CACHING_SHA2,
        }
    }
}

/// What the proxy holds to check a client's proof of its password.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself (empty: the account has none).
    Password(String),
    /// SHA1(SHA1(password)): what `mysql_native_password` stores.
    NativeHash([u8; 20]),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself, in a log line or a panic message.
        f.write_str(match self {
            Secret::Password(p) if p.is_empty() => "Secret::Password(<empty>)",
            Secret::Password(_) => "Secret::Password(<redacted>)",
            Secret::NativeHash(_) => "Secret::NativeHash(<redacted>)",
        })
    }
}

impl Secret {
    /// Parses a hash as `mysql.user` shows it: `*` and 40 hex digits, or
    /// empty for an account without a password.
    pub fn from_native_hash(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Secret::Password(String::new()));
        }
        let hex = text.strip_prefix('*')?;
        if hex.len() != 40 {
            return None;
        }
        let mut hash = [0u8; 20];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Secret::NativeHash(hash))
    }

    /// Whether a client answering with `method` can be checked against
    /// this secret (a hash checks only native scrambles).
    pub fn checks(&self, method: Method) -> bool {
        matches!(
            (self, method),
            (Secret::Password(_), _) | (_, Method::Native)
        )
    }
}

/// Whether `response` is what a client holding the password behind
/// `secret` answers to `salt` by `method`.
pub fn verify(method: Method, salt: &[u8; SALT_LEN], secret: &Secret, response: &[u8]) -> bool {
    let password = match secret {
        Secret::Password(p) if p.is_empty() => return response.is_empty(),
        Secret::Password(p) => p.as_bytes(),
        Secret::NativeHash(hash) => {
            return method == Method::Native && verify_native_hash(salt, hash, response)
        }
    };
    match method {
        Method::Native => scramble_native(salt, password)
            .is_some_and(|expected| constant_time_eq(&expected, response)),
        Method::CachingSha2 => scramble_sha256(salt, password)
            .is_some_and(|expected| constant_time_eq(&expected, response)),
    }
}

/// The server's side of `mysql_native_password`: the client sent
/// SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))); undoing the XOR with the
/// stored hash gives a candidate SHA1(pw), right if its SHA1 is the hash.
fn verify_native_hash(salt: &[u8; SALT_LEN], hash: &[u8; 20], response: &[u8]) -> bool {
    native_stage1(salt, hash, response).is_some()
}

/// What a client proved it holds, when its `mysql_native_password`
/// `response` to `salt` is right for the stored `hash`: SHA1(password).
/// With it the proxy can answer any server's salt as that client would
/// ([`native_scramble_from_stage1`]) without ever knowing the password;
/// `None` when the response is wrong.
pub fn native_stage1(salt: &[u8], hash: &[u8; 20], response: &[u8]) -> Option<[u8; 20]> {
    use sha1::{Digest, Sha1};
    if response.len() != 20 {
        return None;
    }
    let mask = Sha1::new().chain_update(salt).chain_update(hash).finalize();
    let mut stage1 = [0u8; 20];
    for ((s, r), m) in stage1.iter_mut().zip(response).zip(mask.iter()) {
        *s = r ^ m;
    }
    constant_time_eq(&Sha1::digest(stage1), hash).then_some(stage1)
}

/// The `mysql_native_password` answer to `salt` of whoever holds
/// `stage1` = SHA1(password): stage1 XOR SHA1(salt + SHA1(stage1)).
pub fn native_scramble_from_stage1(salt: &[u8], stage1: &[u8; 20]) -> [u8; 20] {
    use sha1::{Digest, Sha1};
    let hash = Sha1::digest(stage1);
    let mask = Sha1::new().chain_update(salt).chain_update(hash).finalize();
    let mut out = [0u8; 20];
    for ((o, s), m) in out.iter_mut().zip(stage1).zip(mask.iter()) {
        *o = s ^ m;
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(p: &str) -> Secret {
        Secret::Password(p.into())
    }

    #[test]
    fn native_accepts_right_and_refuses_wrong() {
        let salt = new_salt();
        let good = scramble_native(&salt, b"secret").unwrap();
        assert!(verify(Method::Native, &salt, &pw("secret"), &good));
        assert!(!verify(Method::Native, &salt, &pw("Secret"), &good));
        assert!(!verify(Method::Native, &new_salt(), &pw("secret"), &good));
        assert!(!verify(Method::Native, &salt, &pw("secret"), &good[..19]));
    }

    #[test]
    fn caching_sha2_fast_auth() {
        let salt = new_salt();
        let good = scramble_sha256(&salt, b"pw").unwrap();
        assert!(verify(Method::CachingSha2, &salt, &pw("pw"), &good));
        assert!(!verify(Method::CachingSha2, &salt, &pw("px"), &good));
    }

    #[test]
    fn empty_password_needs_empty_response() {
        let salt = new_salt();
        assert!(verify(Method::Native, &salt, &pw(""), b""));
        assert!(!verify(Method::Native, &salt, &pw(""), b"x"));
        assert!(!verify(Method::Native, &salt, &pw("pw"), b""));
    }

    #[test]
    fn a_stored_native_hash_checks_native_scrambles_only() {
        // MariaDB: SELECT PASSWORD('secret').
        let hash = Secret::from_native_hash("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7").unwrap();
        let lower = Secret::from_native_hash("*14e65567abdb5135d0cfd9a70b3032c179a49ee7").unwrap();
        assert_eq!(hash, lower);
        let salt = new_salt();
        let good = scramble_native(&salt, b"secret").unwrap();
        assert!(verify(Method::Native, &salt, &hash, &good));
        let wrong = scramble_native(&salt, b"secreT").unwrap();
        assert!(!verify(Method::Native, &salt, &hash, &wrong));
        assert!(!verify(Method::Native, &new_salt(), &hash, &good));
        assert!(!verify(Method::Native, &salt, &hash, b""));
        assert!(!hash.checks(Method::CachingSha2));
        let sha2 = scramble_sha256(&salt, b"secret").unwrap();
        assert!(!verify(Method::CachingSha2, &salt, &hash, &sha2));
        assert_eq!(Secret::from_native_hash(""), Some(pw("")));
        for bad in [
            "14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
            "*14E6",
            "*ZZE65567ABDB5135D0CFD9A70B3032C179A49EE7",
        ] {
            assert_eq!(Secret::from_native_hash(bad), None, "{bad}");
        }
        assert!(!format!("{hash:?} {:?}", pw("x")).contains("14E6"));
    }

    #[test]
    fn the_proof_of_a_native_login_answers_another_salt() {
        let hash = Secret::from_native_hash("*14E65567ABDB5135D0CFD9A70B3032C179A49EE7").unwrap();
        let Secret::NativeHash(hash) = hash else {
            unreachable!("a hash")
        };
        let (client_salt, server_salt) = (new_salt(), new_salt());
        let response = scramble_native(&client_salt, b"secret").unwrap();
        let stage1 = native_stage1(&client_salt, &hash, &response).expect("right response");
        assert_eq!(
            native_scramble_from_stage1(&server_salt, &stage1),
            scramble_native(&server_salt, b"secret").unwrap(),
            "what the client itself would answer the server"
        );
        let wrong = scramble_native(&client_salt, b"Secret").unwrap();
        assert_eq!(native_stage1(&client_salt, &hash, &wrong), None);
    }

    #[test]
    fn salt_has_no_nul() {
        for _ in 0..100 {
            assert!(!new_salt().contains(&0));
        }
    }
}
