//! `keeper:` in a proxy's or an agent's config: one keeper, or every
//! keeper of a group on etcd (SPEC §8).

use super::lists::OneOrMany;
use serde::de::{self, Deserializer};
use serde::{Serialize, Serializer};
use std::fmt;

/// The word that makes a proxy run the keeper in its own process.
pub const EMBEDDED: &str = "embedded";

/// The keepers a proxy or an agent talks to, in the order it tries them.
///
/// Written as one string (`keeper: 10.0.0.5:7700`, or `keeper: embedded`
/// for a proxy), as a YAML list (`keeper: ["10.0.0.5:7700",
/// "10.0.0.6:7700"]`), or as a comma list in one string
/// (`ZERODB_KEEPER=10.0.0.5:7700,10.0.0.6:7700`). Never empty; `embedded`
/// only ever stands alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeeperAddrs(Vec<String>);

/// A keeper list that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeeperAddrsError {
    /// No address at all.
    #[error("`keeper` names no keeper")]
    Empty,
    /// `embedded` in a list of several keepers.
    #[error("`keeper: embedded` runs the keeper in this process and cannot be part of a list")]
    EmbeddedInList,
}

impl KeeperAddrs {
    /// The keepers `addrs` names (each trimmed, empty entries dropped).
    pub fn new<I, S>(addrs: I) -> Result<Self, KeeperAddrsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list: Vec<String> = addrs
            .into_iter()
            .map(|s| s.as_ref().trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            return Err(KeeperAddrsError::Empty);
        }
        if list.len() > 1 && list.iter().any(|s| s == EMBEDDED) {
            return Err(KeeperAddrsError::EmbeddedInList);
        }
        Ok(Self(list))
    }

    /// One keeper, `addr` as given.
    pub fn one(addr: impl Into<String>) -> Self {
        Self(vec![addr.into()])
    }

    /// The keepers written in one string: one address, `embedded`, or a
    /// comma list.
    pub fn parse(text: &str) -> Result<Self, KeeperAddrsError> {
        Self::new(text.split(','))
    }

    /// Whether this is `embedded` (the proxy runs the keeper itself).
    pub fn is_embedded(&self) -> bool {
        self.0.len() == 1 && self.0[0] == EMBEDDED
    }

    /// The addresses, in the configured order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// How many keepers are listed (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a keeper list names at least one keeper.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The addresses, in the configured order.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.clone()
    }
}

impl fmt::Display for KeeperAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl Serialize for KeeperAddrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for KeeperAddrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = OneOrMany::deserialize(d)?;
        // Written as a sequence, it is a list even with one item: never
        // `embedded`.
        if let OneOrMany::Many(v) = &raw {
            if v.iter().any(|s| s.trim() == EMBEDDED) {
                return Err(de::Error::custom(KeeperAddrsError::EmbeddedInList));
            }
        }
        KeeperAddrs::new(raw.items()).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_yaml, EnvOverrides};
    use figment::providers::{Format, Yaml};
    use figment::Figment;

    #[derive(Debug, serde::Deserialize)]
    struct C {
        keeper: KeeperAddrs,
    }

    fn load(yaml: &str) -> Result<Vec<String>, String> {
        from_yaml::<C>(yaml, &["keeper"])
            .map(|c| c.keeper.to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn one_string_a_list_or_a_comma_list() {
        assert_eq!(load("keeper: 10.0.0.5:7700").unwrap(), ["10.0.0.5:7700"]);
        assert_eq!(load("keeper: embedded").unwrap(), ["embedded"]);
        assert!(from_yaml::<C>("keeper: embedded", &["keeper"])
            .unwrap()
            .keeper
            .is_embedded());
        assert_eq!(
            load("keeper: [\"10.0.0.5:7700\", \"10.0.0.6:7700\"]").unwrap(),
            ["10.0.0.5:7700", "10.0.0.6:7700"]
        );
        assert_eq!(load("keeper:\n  - a:1\n  - b:2\n").unwrap(), ["a:1", "b:2"]);
        assert_eq!(load("keeper: \"a:1, b:2\"").unwrap(), ["a:1", "b:2"]);
    }

    #[test]
    fn embedded_stands_alone_and_a_list_is_never_empty() {
        for bad in [
            "keeper: [embedded]",
            "keeper: [\"a:1\", embedded]",
            "keeper: \"a:1,embedded\"",
        ] {
            let e = load(bad).unwrap_err();
            assert!(e.contains("embedded"), "{bad}: {e}");
        }
        for bad in ["keeper: []", "keeper: \"\"", "keeper: \" , \""] {
            let e = load(bad).unwrap_err();
            assert!(e.contains("no keeper"), "{bad}: {e}");
        }
        assert!(load("keeper: 7700").is_err(), "a number is no address");
    }

    #[test]
    fn the_environment_gives_a_comma_list() {
        let env = EnvOverrides::from_vars(
            "ZERODB_",
            &["keeper"],
            [("ZERODB_KEEPER".to_string(), "a:1,b:2".to_string())],
        );
        let f = Figment::from(Yaml::string("keeper: c:3")).merge(env);
        let c: C = crate::config::extract_known(f, &["keeper"]).unwrap();
        assert_eq!(c.keeper.to_vec(), ["a:1", "b:2"]);
        assert_eq!(c.keeper.to_string(), "a:1,b:2");
    }

    #[test]
    fn it_writes_back_as_it_was_written() {
        let one = KeeperAddrs::parse("a:1").unwrap();
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""a:1""#);
        let two = KeeperAddrs::parse("a:1,b:2").unwrap();
        assert_eq!(serde_json::to_string(&two).unwrap(), r#"["a:1","b:2"]"#);
    }
}
