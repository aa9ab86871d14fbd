//! Durations in config files: a number of milliseconds, or a string such
//! as `"250ms"`, `"2s"`, `"1m"` (use with `#[serde(with = …)]`).

/// Durations in config: a number of milliseconds, or a string such as
/// `"250ms"`, `"2s"`, `"1m"`.
pub mod duration {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes the duration as whole milliseconds, e.g. `"250ms"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Reads a number of milliseconds or a string with a unit (see [`parse`]).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        }
    }

    /// A duration that does not parse.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct BadDuration(String);

    /// Parses `250ms`, `1.5s`, `2m`, `1h`, or a bare number of milliseconds.
    pub fn parse(t: &str) -> Result<Duration, BadDuration> {
        let t = t.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| BadDuration(format!("bad duration `{t}`")))?;
        let secs = match unit.trim() {
            "ms" | "" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            u => {
                return Err(BadDuration(format!(
                    "bad duration unit `{u}` in `{t}` (use ms, s, m or h)"
                )))
            }
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(BadDuration(format!("bad duration `{t}`")));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

/// An optional duration (see [`duration`]); `null` or absent is `None`.
pub mod duration_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes `Some` as [`duration::serialize`](super::duration::serialize) does, `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a duration as [`duration`](super::duration) does; null or absent is `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            duration::parse("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(duration::parse("3 parsecs").is_err());
        assert!(duration::parse("").is_err());
    }
}
