//! Loading plugin libraries safely, and calling them with Rust types: a
//! [`PluginLibrary`] (the loaded `.so`) makes [`SourceHandle`]s (the
//! plugin's source objects).
//!
//! Every load goes through [`load`]: the file is checked (exists, regular,
//! ELF, safe ownership and mode) before it is mapped, then abi_stable checks
//! the version and the full type layout. Each error is one line that names
//! the path. Each file is loaded on its own (`lib_header_from_path` +
//! `init_root_module`): abi_stable's `load_from_file` caches one module per
//! type, so a second plugin file would silently return the first.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::std_types::{RResult, RString};
use ntpd_plugin_api::{
    ABI_VERSION, Capabilities, InitRequest, PluginError, PluginInfo, PluginModuleRef, Sample,
    SourceBox,
};

/// Why a plugin could not be loaded or initialised.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist.
    #[error("{path}: no such file")]
    NotFound {
        /// The plugin path.
        path: PathBuf,
    },
    /// The file could not be inspected.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The plugin path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path is a directory or a special file.
    #[error("{path}: not a regular file")]
    NotRegular {
        /// The plugin path.
        path: PathBuf,
    },
    /// The file is not an ELF object.
    #[error("{path}: not a plugin: not an ELF shared library")]
    NotElf {
        /// The plugin path.
        path: PathBuf,
    },
    /// Loading the file would let someone other than root or us run code in
    /// the daemon.
    #[error("{path}: refused: {reason} (pass --allow-insecure-plugin to load it anyway)")]
    Insecure {
        /// The plugin path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The dynamic loader refused the file.
    #[error("{path}: cannot be loaded: {reason}")]
    Open {
        /// The plugin path.
        path: PathBuf,
        /// The loader's message, on one line.
        reason: String,
    },
    /// The file is a shared library but exports no plugin root module.
    #[error("{path}: not an ntpd-host plugin: it exports no abi_stable root module")]
    NotPlugin {
        /// The plugin path.
        path: PathBuf,
    },
    /// The plugin was built for another ABI major version.
    #[error(
        "{path}: incompatible plugin: built for plugin ABI {plugin}, this host uses ABI {host} \
         (rebuild the plugin with an ntpd-plugin-api SDK of ABI {host_major})"
    )]
    Version {
        /// The plugin path.
        path: PathBuf,
        /// The plugin's ABI version.
        plugin: String,
        /// The host's ABI version.
        host: String,
        /// The host's ABI major version.
        host_major: u32,
    },
    /// The ABI versions match but the type layouts differ.
    #[error(
        "{path}: incompatible plugin: its ABI {plugin} layout differs from this host's ABI {host} \
         (rebuild it with an ntpd-plugin-api SDK of this ABI): {detail}"
    )]
    Layout {
        /// The plugin path.
        path: PathBuf,
        /// The plugin's ABI version.
        plugin: String,
        /// The host's ABI version.
        host: String,
        /// The last `Error:` block of abi_stable's report, on one line.
        detail: String,
    },
    /// Any other abi_stable failure (a different abi_stable, a failing root
    /// module initialiser).
    #[error("{path}: cannot be loaded: {detail}")]
    Abi {
        /// The plugin path.
        path: PathBuf,
        /// abi_stable's message, on one line.
        detail: String,
    },
    /// The plugin refused its configuration or could not start.
    #[error("{path}: init failed: {error}")]
    Init {
        /// The plugin path.
        path: PathBuf,
        /// The plugin's error.
        error: PluginError,
    },
}

/// A loaded plugin library.
#[derive(Clone)]
pub struct PluginLibrary {
    path: PathBuf,
    module: PluginModuleRef,
    info: PluginInfo,
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

/// Options for [`load`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Load the file even if its owner or mode would let someone else change
    /// it.
    pub allow_insecure: bool,
}

/// Loads the plugin library at `path`, checking it first.
pub fn load(path: &Path, options: LoadOptions) -> Result<PluginLibrary, LoadError> {
    load_opened(open_checked(path, options)?, path)
}

/// Loads a plugin from `file`, opened and checked by [`open_checked`]
/// (possibly with more privileges than this process has now); `path` is
/// only for messages.
pub fn load_opened(file: File, path: &Path) -> Result<PluginLibrary, LoadError> {
    // Hand the loader the very file that was checked, not the path again:
    // the path could be swapped between the check and the load. The
    // descriptor stays open for the life of the process (the library is never
    // unloaded either), so its /proc/self/fd name is never reused: the
    // dynamic loader recognises libraries by that name.
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.into_raw_fd()));
    let header = lib_header_from_path(&fd_path).map_err(|e| library_error(path, None, e))?;
    let plugin_version = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| library_error(path, Some(&plugin_version), e))?;
    let info = sanitize_info((module.info())());
    Ok(PluginLibrary {
        path: path.to_owned(),
        module,
        info,
    })
}

/// The checks made before a file is handed to the dynamic loader (which runs
/// the library's initialisers): a regular ELF file that only root or the
/// current user can change (unless `allow_insecure`).
pub fn check_file(path: &Path, options: LoadOptions) -> Result<(), LoadError> {
    open_checked(path, options).map(drop)
}

/// Opens `path` and makes [`check_file`]'s checks on the open file.
pub fn open_checked(path: &Path, options: LoadOptions) -> Result<File, LoadError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LoadError::NotFound {
                path: path.to_owned(),
            }
        } else {
            LoadError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(LoadError::NotRegular {
            path: path.to_owned(),
        });
    }
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || magic != *b"\x7fELF" {
        return Err(LoadError::NotElf {
            path: path.to_owned(),
        });
    }
    if !options.allow_insecure {
        let me = rustix::process::getuid().as_raw();
        if let Some(reason) = insecure_reason(meta.uid(), meta.mode(), me) {
            return Err(LoadError::Insecure {
                path: path.to_owned(),
                reason,
            });
        }
    }
    Ok(file)
}

/// Why a file with this owner and mode must not be loaded by user `me`, or
/// `None` when it is safe: only root or `me` may own it, and nobody else may
/// write it.
pub fn insecure_reason(owner: u32, mode: u32, me: u32) -> Option<String> {
    if owner != 0 && owner != me {
        return Some(format!(
            "the file is owned by uid {owner}, not by root or the current user (uid {me}); \
             chown it to root"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "the file is writable by {} (mode {:04o}); run chmod go-w on it",
            match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (true, true) => "its group and by others",
                (true, false) => "its group",
                _ => "others",
            },
            mode & 0o7777
        ));
    }
    None
}

/// Collapses a multi-line message into one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The longest layout summary, characters.
const LAYOUT_SUMMARY_MAX: usize = 300;

/// The useful part of abi_stable's long layout report: the last `Error:`
/// block, on one line, cut to a readable length.
pub fn layout_summary(report: &str) -> String {
    let tail = match report.rfind("Error:") {
        Some(at) => &report[at + "Error:".len()..],
        None => report,
    };
    let line = one_line(tail);
    if line.chars().count() > LAYOUT_SUMMARY_MAX {
        let cut: String = line.chars().take(LAYOUT_SUMMARY_MAX).collect();
        format!("{cut}...")
    } else {
        line
    }
}

fn library_error(path: &Path, plugin_version: Option<&str>, error: LibraryError) -> LoadError {
    let path = path.to_owned();
    let host = ABI_VERSION.to_owned();
    match error {
        LibraryError::OpenError { err, .. } => LoadError::Open {
            reason: one_line(&err.to_string()),
            path,
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotPlugin { path },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadError::Version {
            path,
            plugin: actual_version.to_string(),
            host: expected_version.to_string(),
            host_major: expected_version.major,
        },
        LibraryError::AbiInstability(report) => LoadError::Layout {
            path,
            plugin: plugin_version.unwrap_or("unknown").to_owned(),
            host,
            detail: layout_summary(&report.to_string()),
        },
        LibraryError::Many(errors) if !errors.is_empty() => {
            // abi_stable collects several; the first decides the message.
            let first = errors.into_iter().next().expect("checked non-empty");
            library_error(&path, plugin_version, first)
        }
        other => LoadError::Abi {
            detail: one_line(&other.to_string()),
            path,
        },
    }
}

impl PluginLibrary {
    /// The path the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's identity.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Calls the plugin's `init` with its configuration as JSON.
    pub fn init(&self, config_json: &str) -> Result<SourceHandle, LoadError> {
        let request = InitRequest {
            config_json: config_json.into(),
            host_version: env!("CARGO_PKG_VERSION").into(),
            flags: 0,
            extensions: "".into(),
        };
        match (self.module.init())(request) {
            RResult::ROk(inner) => Ok(SourceHandle { inner }),
            RResult::RErr(error) => Err(LoadError::Init {
                path: self.path.clone(),
                error: sanitize_error(error),
            }),
        }
    }
}

/// The longest plugin string kept (a message, a name, a description).
pub const MAX_PLUGIN_TEXT: usize = crate::protocol::worker::MAX_TEXT;

/// The longest capabilities `extensions` text kept (longer JSON is cut and
/// then shows as unparsed).
pub const MAX_EXTENSIONS: usize = 4 * MAX_PLUGIN_TEXT;

/// A string from a plugin, made safe to handle: taken as bytes (a plugin
/// could build an `RString` that is not UTF-8), at most `max` of them
/// (a plugin could send 100 MB), decoded lossily, control characters as
/// spaces, " [cut]" appended when it was longer.
pub fn plugin_text(text: RString, max: usize) -> String {
    let bytes = text.into_bytes();
    let head = &bytes[..bytes.len().min(max)];
    let mut out: String = String::from_utf8_lossy(head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if bytes.len() > max {
        out.push_str(" [cut]");
    }
    out
}

fn sanitize_error(e: PluginError) -> PluginError {
    PluginError {
        kind: e.kind,
        message: plugin_text(e.message, MAX_PLUGIN_TEXT).into(),
    }
}

fn sanitize_info(info: PluginInfo) -> PluginInfo {
    let text = |s| RString::from(plugin_text(s, MAX_PLUGIN_TEXT));
    PluginInfo {
        name: text(info.name),
        vendor: text(info.vendor),
        version: text(info.version),
        description: text(info.description),
        sdk_version: text(info.sdk_version),
    }
}

/// A source object created by a plugin, with Rust-flavoured calls. Dropping
/// it drops the plugin's source (which closes its device).
pub struct SourceHandle {
    inner: SourceBox,
}

impl SourceHandle {
    /// The source's capabilities (its strings made safe: see
    /// [`plugin_text`]).
    pub fn capabilities(&self) -> Result<Capabilities, PluginError> {
        match self.inner.capabilities() {
            RResult::ROk(mut caps) => {
                caps.description =
                    plugin_text(std::mem::take(&mut caps.description), MAX_PLUGIN_TEXT).into();
                caps.extensions =
                    plugin_text(std::mem::take(&mut caps.extensions), MAX_EXTENSIONS).into();
                Ok(caps)
            }
            RResult::RErr(e) => Err(sanitize_error(e)),
        }
    }

    /// Takes one sample (an error's message made safe: see
    /// [`plugin_text`]).
    pub fn sample(&mut self) -> Result<Sample, PluginError> {
        self.inner.sample().into_result().map_err(sanitize_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_and_mode_rules() {
        assert_eq!(insecure_reason(0, 0o755, 1000), None);
        assert_eq!(insecure_reason(1000, 0o700, 1000), None);
        assert!(
            insecure_reason(1001, 0o755, 1000)
                .unwrap()
                .contains("uid 1001")
        );
        assert!(insecure_reason(0, 0o775, 1000).unwrap().contains("group"));
        assert!(insecure_reason(0, 0o757, 1000).unwrap().contains("others"));
    }

    #[test]
    fn plugin_strings_are_bounded_lossy_and_on_one_line() {
        assert_eq!(plugin_text(RString::from("a\nb"), 10), "a b");
        let long = RString::from("x".repeat(100_000));
        let cut = plugin_text(long, 16);
        assert_eq!(cut, format!("{} [cut]", "x".repeat(16)));
        // Cut inside a multi-byte character: replaced, not a panic.
        assert_eq!(plugin_text(RString::from("aé"), 2), "a\u{fffd} [cut]");
    }

    #[test]
    fn layout_summary_keeps_the_last_error_block_on_one_line() {
        let report = "Error:\n  first\n\nlots\nof\nlines\nError:\n   Field `x`\n  mismatch\n";
        assert_eq!(layout_summary(report), "Field `x` mismatch");
        let long = format!("Error: {}", "y ".repeat(400));
        assert!(layout_summary(&long).ends_with("..."));
        assert!(layout_summary(&long).len() < 320);
    }
}
