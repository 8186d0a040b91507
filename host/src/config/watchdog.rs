//! Patroni's `watchdog` section: `mode` (`off`, `automatic`, `required`), `device` and
//! `safety_margin`. Pure: YAML in, settings out.

use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

/// How the watchdog is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WatchdogMode {
    /// No watchdog.
    Off,
    /// Armed while primary when the device can be used; without one the node still leads.
    #[default]
    Automatic,
    /// A node without a usable watchdog never leads.
    Required,
}

impl<'de> Deserialize<'de> for WatchdogMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Patroni's parse_mode: YAML's `off`/false, and the short forms `auto`, `require`.
        let v = serde_yaml::Value::deserialize(d)?;
        let text = match &v {
            serde_yaml::Value::Bool(false) => "off".to_string(),
            serde_yaml::Value::Bool(true) => "automatic".to_string(),
            serde_yaml::Value::String(s) => s.trim().to_ascii_lowercase(),
            _ => String::new(),
        };
        match text.as_str() {
            "off" | "false" | "disable" | "disabled" => Ok(WatchdogMode::Off),
            "auto" | "automatic" => Ok(WatchdogMode::Automatic),
            "require" | "required" => Ok(WatchdogMode::Required),
            _ => Err(serde::de::Error::custom(
                "expected off, automatic or required",
            )),
        }
    }
}

/// The `watchdog` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct WatchdogConfig {
    /// How the watchdog is used (Patroni's default: automatic).
    #[serde(default)]
    pub(crate) mode: WatchdogMode,
    /// The device (default `/dev/watchdog`).
    #[serde(default = "d_device")]
    pub(crate) device: PathBuf,
    /// Seconds between the watchdog's expiry and the leader key's: the watchdog fires at
    /// `ttl - safety_margin`; `-1`: at `ttl / 2`.
    #[serde(default = "d_margin")]
    pub(crate) safety_margin: i64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            device: d_device(),
            safety_margin: d_margin(),
        }
    }
}

fn d_device() -> PathBuf {
    PathBuf::from("/dev/watchdog")
}

fn d_margin() -> i64 {
    5
}

impl WatchdogConfig {
    /// The timeout to set, in seconds, for a leader key of `ttl` seconds (at least 1).
    pub(crate) fn timeout(&self, ttl: u64) -> u64 {
        let t = if self.safety_margin == -1 {
            ttl / 2
        } else {
            ttl.saturating_sub(self.safety_margin.max(0) as u64)
        };
        t.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patronis_modes_and_the_timeout() {
        let m = |s: &str| serde_yaml::from_str::<WatchdogConfig>(s).expect("watchdog");
        assert_eq!(m("mode: off").mode, WatchdogMode::Off);
        assert_eq!(m("mode: require").mode, WatchdogMode::Required);
        assert_eq!(m("mode: auto").mode, WatchdogMode::Automatic);
        assert_eq!(m("{}").mode, WatchdogMode::Automatic);
        assert!(serde_yaml::from_str::<WatchdogConfig>("mode: sometimes").is_err());
        assert_eq!(m("{}").timeout(30), 25);
        assert_eq!(m("safety_margin: -1").timeout(30), 15);
        assert_eq!(m("safety_margin: 50").timeout(30), 1);
        assert_eq!(
            m("device: /dev/watchdog1").device,
            PathBuf::from("/dev/watchdog1")
        );
    }
}
