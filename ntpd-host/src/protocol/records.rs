//! The one JSON shape of each thing a plugin reports: its identity, its
//! capabilities, a sample and an error. Worker events, `ntpd-host status
//! --json` and `ntpd-host probe --json` all use these records, so a field
//! has the same name everywhere.

use ntpd_plugin_api::{
    Capabilities, ErrorKind, Leap, PluginError, PluginInfo, ReadMethod, Sample, TimeScale,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who a plugin is, from its `info()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PluginIdentity {
    /// Short machine-friendly name.
    pub name: String,
    /// Who ships it.
    pub vendor: String,
    /// The plugin's own version.
    pub version: String,
    /// One line saying what it is.
    pub description: String,
    /// The SDK release it was built with (informational).
    pub sdk_version: String,
}

impl From<&PluginInfo> for PluginIdentity {
    fn from(info: &PluginInfo) -> Self {
        Self {
            name: info.name.to_string(),
            vendor: info.vendor.to_string(),
            version: info.version.to_string(),
            description: info.description.to_string(),
            sdk_version: info.sdk_version.to_string(),
        }
    }
}

/// What a source can do, from its `capabilities()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CapabilitiesRecord {
    /// The reading method.
    pub method: ReadMethod,
    /// The reference's time scale.
    pub timescale: TimeScale,
    /// The plugin's precision estimate, ns.
    pub precision_ns: u64,
    /// Shortest supported poll interval, log2 seconds.
    pub min_poll: i8,
    /// Longest supported poll interval, log2 seconds.
    pub max_poll: i8,
    /// The plugin's description of the source.
    pub description: String,
    /// Capability flags (none defined in ABI 1).
    pub flags: u64,
    /// The extensions object (`{}` when empty; `{"unparsed": TEXT}` when the
    /// plugin sent something that is not a JSON object).
    pub extensions: Map<String, Value>,
}

impl CapabilitiesRecord {
    /// A string value of the extensions object, e.g. `device`.
    pub fn extension(&self, key: &str) -> Option<&str> {
        self.extensions.get(key).and_then(Value::as_str)
    }

    /// Whether the source supports polling every 2^`poll` seconds.
    pub fn supports_poll(&self, poll: i8) -> bool {
        (self.min_poll..=self.max_poll).contains(&poll)
    }
}

impl From<&Capabilities> for CapabilitiesRecord {
    fn from(caps: &Capabilities) -> Self {
        let text = caps.extensions.as_str();
        let extensions = if text.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                _ => Map::from_iter([("unparsed".to_owned(), Value::String(text.to_owned()))]),
            }
        };
        Self {
            method: caps.method,
            timescale: caps.timescale,
            precision_ns: caps.precision_ns,
            min_poll: caps.min_poll_log2,
            max_poll: caps.max_poll_log2,
            description: caps.description.to_string(),
            flags: caps.flags,
            extensions,
        }
    }
}

/// One measurement, from `sample()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SampleRecord {
    /// System time of the measurement, ns since 1970.
    pub system_time_ns: i64,
    /// Reference minus system, ns.
    pub offset_ns: i64,
    /// The measurement's error bound, ns.
    pub error_ns: u64,
    /// The reference's own error bound, ns (0: unknown).
    pub reference_error_ns: u64,
    /// Leap-second announcement.
    pub leap: Leap,
    /// Raw readings combined.
    pub readings: u32,
    /// Sample flags (none defined in ABI 1).
    pub flags: u64,
}

impl From<&Sample> for SampleRecord {
    fn from(s: &Sample) -> Self {
        Self {
            system_time_ns: s.system_time_ns,
            offset_ns: s.offset_ns,
            error_ns: s.error_ns,
            reference_error_ns: s.reference_error_ns,
            leap: s.leap,
            readings: s.readings,
            flags: s.flags,
        }
    }
}

/// A failed plugin call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ErrorRecord {
    /// What kind of failure (an unknown kind as `unknown(N)`).
    pub kind: ErrorKind,
    /// The plugin's one-line message.
    pub message: String,
}

impl From<&PluginError> for ErrorRecord {
    fn from(e: &PluginError) -> Self {
        Self {
            kind: e.kind,
            message: e.message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntpd_plugin_api::abi_stable::std_types::RString;

    #[test]
    fn capabilities_extensions_are_an_object_or_kept_as_unparsed() {
        let mut caps = Capabilities::new(ReadMethod::PRECISE, TimeScale::TAI, 5, "d");
        let r = CapabilitiesRecord::from(&caps);
        assert!(r.extensions.is_empty());
        caps.extensions = RString::from(r#"{"device":"/dev/ptp0"}"#);
        assert_eq!(
            CapabilitiesRecord::from(&caps).extension("device"),
            Some("/dev/ptp0")
        );
        caps.extensions = RString::from("not json");
        assert_eq!(
            CapabilitiesRecord::from(&caps).extension("unparsed"),
            Some("not json")
        );
    }

    #[test]
    fn records_use_kebab_case_names_and_enum_names() {
        let caps = CapabilitiesRecord::from(&Capabilities::new(
            ReadMethod::EXTENDED,
            TimeScale::UTC,
            300,
            "x",
        ));
        let v = serde_json::to_value(&caps).unwrap();
        assert_eq!(v["method"], "extended");
        assert_eq!(v["precision-ns"], 300);
        assert_eq!(
            (v["min-poll"].clone(), v["max-poll"].clone()),
            (json(-1), json(6))
        );
        let mut s = Sample::new(7, -3, 2);
        s.leap = Leap(9);
        let v = serde_json::to_value(SampleRecord::from(&s)).unwrap();
        assert_eq!(v["leap"], "unknown(9)");
        assert_eq!(v["offset-ns"], -3);
        let back: SampleRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, SampleRecord::from(&s));
        assert!(caps.supports_poll(-1) && caps.supports_poll(6) && !caps.supports_poll(7));
    }

    fn json(v: i64) -> Value {
        Value::from(v)
    }
}
