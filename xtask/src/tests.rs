//! The committed man pages and completions are what `gen` writes; `check`
//! names the file at fault; the hand-written config page covers every key
//! the config types accept.

use std::collections::BTreeSet;

use super::*;

/// Copies the committed `docs/man` and `docs/completions` into a fresh
/// directory.
fn copy_of_docs() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for sub in ["man", "completions"] {
        fs::create_dir(copy.path().join(sub)).unwrap();
        for entry in fs::read_dir(docs_dir().join(sub)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    copy
}

/// The test CI runs: fails with the stale file and the command that fixes it.
#[test]
fn generated_files_are_current() {
    if let Err(stale) = check(&docs_dir()).unwrap() {
        panic!("{stale}");
    }
}

#[test]
fn check_names_the_stale_file_and_the_fix() {
    let docs = copy_of_docs();
    assert_eq!(check(docs.path()).unwrap(), Ok(()));

    let page = docs.path().join("man/ntpd-host-probe.8");
    let mut text = fs::read_to_string(&page).unwrap();
    text = text.replace("Number of samples to take", "Number of samples");
    fs::write(&page, text).unwrap();
    let stale = check(docs.path()).unwrap().unwrap_err();
    assert_eq!(
        stale,
        Stale::Differs(PathBuf::from("man/ntpd-host-probe.8"))
    );
    let message = stale.to_string();
    assert!(
        message.starts_with("docs/man/ntpd-host-probe.8 is stale"),
        "{message}"
    );
    assert!(message.contains("`cargo run -p xtask -- gen`"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let docs = copy_of_docs();
    fs::remove_file(docs.path().join("completions/_ntpd-host")).unwrap();
    assert_eq!(
        check(docs.path()).unwrap(),
        Err(Stale::Differs(PathBuf::from("completions/_ntpd-host")))
    );

    let docs = copy_of_docs();
    fs::write(docs.path().join("man/ntpd-host-old.8"), ".TH x 8\n").unwrap();
    let stale = check(docs.path()).unwrap().unwrap_err();
    assert_eq!(stale, Stale::Orphan(PathBuf::from("man/ntpd-host-old.8")));
    assert!(stale.to_string().contains("delete it"), "{stale}");
}

#[test]
fn output_is_deterministic_and_versioned_from_the_crate() {
    let once: Vec<_> = generate()
        .unwrap()
        .into_iter()
        .map(|f| f.contents)
        .collect();
    let twice: Vec<_> = generate()
        .unwrap()
        .into_iter()
        .map(|f| f.contents)
        .collect();
    assert_eq!(once, twice);
    let version = Cli::command().get_version().unwrap().to_owned();
    let main = String::from_utf8(once[0].clone()).unwrap();
    let title = format!(".TH ntpd-host 8 \"\" \"ntpd-host {version}\" \"System Administration\"");
    assert!(
        main.lines().any(|l| l == title),
        "no date, fixed version:\n{main}"
    );
}

#[test]
fn pages_and_completions_cover_the_visible_subcommands_only() {
    // The rebuilt command loses nothing users see: same help text.
    let mut real = Cli::command();
    let mut public = public_command();
    assert_eq!(
        real.render_long_help().to_string(),
        public.render_long_help().to_string()
    );

    let files = generate().unwrap();
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    for sub in ["run", "bridge", "validate", "status", "probe"] {
        let page = format!("man/ntpd-host-{sub}.8");
        assert!(names.contains(&page), "{page} missing: {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("worker") || n.contains("help"))
    );
    for file in &files {
        let text = String::from_utf8_lossy(&file.contents);
        assert!(
            !text.contains("Internal: one plugin worker") && !text.contains("worker)"),
            "{} offers the hidden worker subcommand",
            file.path.display()
        );
    }
}

/// The field names a serde error lists after "expected one of".
fn expected_fields(message: &str) -> BTreeSet<String> {
    let (_, list) = message
        .split_once("expected one of")
        .unwrap_or_else(|| panic!("not an unknown-field error: {message}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys `ntpd-host.toml.5` documents: the bold head of each `.TP` item.
fn documented_keys(page: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = page.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| {
            let rest = w[1].strip_prefix("\\fB")?;
            let (key, _) = rest.split_once("\\fR")?;
            Some(key.replace("\\-", "-"))
        })
        .collect()
}

#[test]
fn config_page_documents_every_key() {
    let page = fs::read_to_string(docs_dir().join("man/ntpd-host.toml.5")).unwrap();
    let documented = documented_keys(&page);

    // The keys each serde type accepts, as its unknown-field error lists them.
    let file = Path::new("/etc/ntpd-rs/ntp.toml");
    let host = ntpd_host::config::parse(file, "[ntpd-host]\nno-such-key = 1\n")
        .unwrap_err()
        .to_string();
    let source = ntpd_host::config::parse(
        file,
        "[[source]]\nmode = \"plugin\"\npath = \"/usr/lib/ntpd-rs/libntpd_ptp.so\"\nno-such-key = 1\n",
    )
    .unwrap_err()
    .to_string();
    let plugin =
        ntpd_plugin_api::parse_config::<ntpd_ptp::config::ConfigToml>(r#"{"no-such-key": 1}"#)
            .unwrap_err();

    for (table, message) in [
        ("[ntpd-host]", host),
        ("[[source]]", source),
        ("[source.config]", plugin),
    ] {
        let keys = expected_fields(&message);
        assert!(keys.len() >= 6, "{table}: {keys:?} from {message}");
        let missing: Vec<_> = keys.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "docs/man/ntpd-host.toml.5 does not document the {table} key(s) {missing:?}"
        );
    }
}
