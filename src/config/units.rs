//! Value types of the configuration file that need parsing beyond TOML's
//! own: sizes (`"25MB"`), durations (`"5m"`), and small enumerations. Each
//! fails deserialization with a message that says what is accepted, so the
//! error lands on the right line.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A size in octets: an integer, or a string with a unit. `KB`, `MB`, `GB`
/// are decimal (as Postfix and most MTAs count message sizes), `KiB`,
/// `MiB`, `GiB` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// A size that does not parse (the text as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: use a number of octets or a number with B, KB, MB, GB, KiB, MiB or GiB, e.g. \"25MB\"")]
pub struct BadSize(pub String);

impl std::str::FromStr for Size {
    type Err = BadSize;
    fn from_str(s: &str) -> Result<Self, BadSize> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = (&s[..split], s[split..].trim());
        let bad = || BadSize(s.to_string());
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Size).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 25MB or a number of octets")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as a number with a unit: `500ms`, `30s`, `5m`, `2h`,
/// `5d`. A bare integer means seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

/// A duration that does not parse (the text as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use a number with ms, s, m, h or d, e.g. \"5m\"")]
pub struct BadSpan(pub String);

impl std::str::FromStr for Span {
    type Err = BadSpan;
    fn from_str(s: &str) -> Result<Self, BadSpan> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = (&s[..split], s[split..].trim());
        let bad = || BadSpan(s.to_string());
        let n: u64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        Ok(Span(d))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"5m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                u64::try_from(v)
                    .map(|s| Span(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Log verbosity per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Outbound TLS version floor (`[profile.client] version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "system")]
    System,
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

/// Outbound cipher grade (`[profile.client] cipher_grade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CipherGrade {
    High,
    Medium,
    #[default]
    Any,
}

/// What to do with bare CR / LF in message data (`[limits] bare_line_endings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    #[default]
    Reject,
    Normalize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("25MB".parse::<Size>(), Ok(Size(25_000_000)));
        assert_eq!("1KiB".parse::<Size>(), Ok(Size(1024)));
        assert_eq!("100".parse::<Size>(), Ok(Size(100)));
        assert!("25XB".parse::<Size>().is_err());
        assert!("MB".parse::<Size>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!("5m".parse::<Span>(), Ok(Span(Duration::from_secs(300))));
        assert_eq!(
            "250ms".parse::<Span>(),
            Ok(Span(Duration::from_millis(250)))
        );
        assert_eq!("5d".parse::<Span>(), Ok(Span(Duration::from_secs(432_000))));
        assert!("5 minutes".parse::<Span>().is_err());
    }
}
