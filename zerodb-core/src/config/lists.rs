//! Lists in config: a YAML list, or one string of comma-separated items
//! (what an environment variable such as `ZERODB_ETCD__ENDPOINTS=a:1,b:2`
//! gives).

use serde::{Deserialize, Deserializer};

/// A list as written: one string (perhaps a comma list), or a sequence.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    /// One string.
    One(String),
    /// A sequence.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The items: the string split at commas, or the sequence; each
    /// trimmed, blank ones dropped.
    pub(crate) fn items(self) -> Vec<String> {
        let items = match self {
            OneOrMany::One(s) => s.split(',').map(str::to_string).collect(),
            OneOrMany::Many(v) => v,
        };
        items
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Reads a list of strings from a sequence, or from one string split at
/// commas (blank items dropped).
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(OneOrMany::deserialize(d)?.items())
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::one_or_many")]
        v: Vec<String>,
    }

    #[test]
    fn a_list_or_a_comma_string() {
        let t: T = serde_json::from_str(r#"{"v":["a:1","b:2"]}"#).unwrap();
        assert_eq!(t.v, ["a:1", "b:2"]);
        let t: T = serde_json::from_str(r#"{"v":"a:1, b:2,"}"#).unwrap();
        assert_eq!(t.v, ["a:1", "b:2"]);
        assert!(serde_json::from_str::<T>(r#"{"v":7}"#).is_err());
    }
}
