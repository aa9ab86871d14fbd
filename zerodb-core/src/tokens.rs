//! The bearer tokens an HTTP surface accepts: the cluster token peers
//! present, and operator tokens (`admin_token_file`). A file holds one
//! token per line, two while one is rotated: both are accepted until the
//! old line is removed and the file read again.

use std::path::Path;
use std::sync::{Arc, RwLock};

/// Most tokens a file may hold: the one in force and the next.
pub const MAX_TOKENS: usize = 2;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What reading it said.
        source: std::io::Error,
    },
    /// It holds no token, or more than [`MAX_TOKENS`].
    #[error("{path} must hold 1 or {MAX_TOKENS} tokens, one per line; it holds {found}")]
    Count {
        /// The file.
        path: String,
        /// How many non-empty lines it has.
        found: usize,
    },
}

/// Reads a token file: one token per non-empty line, blanks around each
/// ignored.
pub fn read_token_file(path: &Path) -> Result<Vec<String>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() || tokens.len() > MAX_TOKENS {
        return Err(TokenFileError::Count {
            path: path.display().to_string(),
            found: tokens.len(),
        });
    }
    Ok(tokens)
}

/// A set of accepted tokens, shared by the routes it guards and replaced
/// whole when its file is read again.
#[derive(Clone, Default)]
pub struct Tokens(Arc<RwLock<Vec<String>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} accepted)", self.read().len())
    }
}

impl Tokens {
    /// Accepts exactly `tokens` (none: nothing is accepted).
    pub fn new(tokens: Vec<String>) -> Self {
        Self(Arc::new(RwLock::new(tokens)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Accepts `tokens` from now on, in place of the ones before.
    pub fn replace(&self, tokens: Vec<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = tokens;
    }

    /// Whether an `Authorization` header carries one of the tokens, checked
    /// in time independent of where they differ.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        // Every token is compared, so the time says nothing of which one
        // (or whether any) matched.
        self.read()
            .iter()
            .fold(false, |ok, t| crate::control::token_matches(header, t) | ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_one_or_two_tokens() {
        let dir = std::env::temp_dir().join(format!("zerodb-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "old-token\n  new-token  \n\n").unwrap();
        let t = Tokens::new(read_token_file(&f).unwrap());
        assert!(t.accepts(Some("Bearer old-token")));
        assert!(t.accepts(Some("Bearer new-token")));
        assert!(!t.accepts(Some("Bearer other")));
        assert!(!t.accepts(None));
        t.replace(vec!["new-token".into()]);
        assert!(!t.accepts(Some("Bearer old-token")), "rotated out");
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            read_token_file(&f),
            Err(TokenFileError::Count { found: 0, .. })
        ));
        std::fs::write(&f, "a\nb\nc\n").unwrap();
        assert!(matches!(
            read_token_file(&f),
            Err(TokenFileError::Count { found: 3, .. })
        ));
        assert!(read_token_file(&dir.join("missing")).is_err());
        assert!(!format!("{t:?}").contains("new-token"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
