//! Loads the built `libntpd_ptp.so` the way ntpd-host does (abi_stable's
//! header check, then the root module) and calls it across the boundary.

use std::path::PathBuf;

use abi_stable::library::lib_header_from_path;
use ntpd_plugin_api::{ErrorKind, InitRequest, PluginModuleRef, SDK_VERSION};

/// The cdylib cargo built next to this test binary (`target/<profile>/deps`).
fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    let path = deps.join("libntpd_ptp.so");
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn module() -> PluginModuleRef {
    let header = lib_header_from_path(&plugin_path()).expect("abi_stable header");
    header
        .init_root_module::<PluginModuleRef>()
        .expect("layout and version accepted")
}

fn init(module: PluginModuleRef, json: &str) -> Result<(), ntpd_plugin_api::PluginError> {
    let request = InitRequest {
        config_json: json.into(),
        host_version: "abi-test".into(),
        flags: 0,
        extensions: "".into(),
    };
    (module.init())(request).into_result().map(drop)
}

#[test]
fn the_library_exports_a_compatible_module() {
    let module = module();
    let info = (module.info())();
    assert_eq!(info.name.as_str(), "ptp");
    assert_eq!(info.sdk_version.as_str(), SDK_VERSION);
    assert_eq!(info.version.as_str(), env!("CARGO_PKG_VERSION"));

    // Errors cross the boundary with their kind and one-line message.
    let e = init(module, r#"{"device": "/dev/ptp-ntpd-abi-test-missing"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UNAVAILABLE);
    assert!(
        e.message
            .as_str()
            .starts_with("PTP clock /dev/ptp-ntpd-abi-test-missing does not exist (PTP clocks in /sys/class/ptp: "),
        "{}",
        e.message
    );
    let e = init(module, r#"{"device": "/dev/null"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CONFIGURATION);
    let e = init(module, r#"{"method": "fast", "device": "/dev/ptp0"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CONFIGURATION);
    assert!(
        e.message
            .as_str()
            .starts_with("invalid plugin config: method: \"fast\" is not a method"),
        "{}",
        e.message
    );
}
