//! Lists in config: a YAML list, or one string of comma-separated items
//! (what an environment variable such as `ZERODB_ETCD__ENDPOINTS=a:1,b:2`
//! gives).

use serde::{Deserialize, Deserializer};

/// Reads a list of strings from a sequence, or from one string split at
/// commas (blank items dropped).
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s.split(',').map(str::to_string).collect(),
        Raw::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
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
