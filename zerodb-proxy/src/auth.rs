//! Authenticating clients against the proxy's own user list.
//!
//! The proxy knows each user's password, so it can check a
//! `mysql_native_password` scramble and a `caching_sha2_password` fast-auth
//! scramble directly; with the plaintext at hand there is never a cache miss,
//! so caching_sha2's full (RSA or TLS) exchange is not needed.

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

/// Whether `response` is what a client holding `password` answers to `salt`.
pub fn verify(method: Method, salt: &[u8; SALT_LEN], password: &str, response: &[u8]) -> bool {
    if password.is_empty() {
        return response.is_empty();
    }
    match method {
        Method::Native => scramble_native(salt, password.as_bytes())
            .is_some_and(|expected| constant_time_eq(&expected, response)),
        Method::CachingSha2 => scramble_sha256(salt, password.as_bytes())
            .is_some_and(|expected| constant_time_eq(&expected, response)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_accepts_right_and_refuses_wrong() {
        let salt = new_salt();
        let good = scramble_native(&salt, b"secret").unwrap();
        assert!(verify(Method::Native, &salt, "secret", &good));
        assert!(!verify(Method::Native, &salt, "Secret", &good));
        assert!(!verify(Method::Native, &new_salt(), "secret", &good));
        assert!(!verify(Method::Native, &salt, "secret", &good[..19]));
    }

    #[test]
    fn caching_sha2_fast_auth() {
        let salt = new_salt();
        let good = scramble_sha256(&salt, b"pw").unwrap();
        assert!(verify(Method::CachingSha2, &salt, "pw", &good));
        assert!(!verify(Method::CachingSha2, &salt, "px", &good));
    }

    #[test]
    fn empty_password_needs_empty_response() {
        let salt = new_salt();
        assert!(verify(Method::Native, &salt, "", b""));
        assert!(!verify(Method::Native, &salt, "", b"x"));
        assert!(!verify(Method::Native, &salt, "pw", b""));
    }

    #[test]
    fn salt_has_no_nul() {
        for _ in 0..100 {
            assert!(!new_salt().contains(&0));
        }
    }
}
