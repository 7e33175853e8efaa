//! Helpers shared by the serde forms of every policy's configuration.

/// Serde adapter for durations written as human-readable strings: `"800ms"`,
/// `"10s"`, `"1m 30s"`, `"2h"`.
///
/// Use it on your own configuration structs that embed durations the way
/// ripcord's do:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(with = "ripcord::duration")]
///     deadline: Duration,
/// }
///
/// let s: Settings = toml::from_str(r#"deadline = "1m 30s""#).unwrap();
/// assert_eq!(s.deadline, Duration::from_secs(90));
/// # }
/// ```
#[cfg(feature = "serde")]
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Parses a human-readable duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "invalid duration {s:?} ({e}); expected e.g. \"800ms\", \"10s\", \"1m 30s\""
            ))
        })
    }

    /// Writes a duration in the same human-readable form.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// The same adapter for `Option<Duration>`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        /// Parses an optional human-readable duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }

        /// Writes an optional duration.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}
