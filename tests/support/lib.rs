//! Shared test support: a fresh database per test, a GitHub stand-in that replays recorded
//! exchanges, the real data files, and the `ghevents` binary.

pub mod db;
pub mod fixtures;
pub mod replay;

use std::path::PathBuf;
use std::sync::Once;

/// Logs go nowhere unless `TEST_LOG` is set.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "debug".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real GitHub data beside the checkout (`../shared/data`), or `GHEVENTS_DATA_DIR`.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("GHEVENTS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    assert!(
        dir.join("gharchive").is_dir(),
        "GitHub data not found at {} (set GHEVENTS_DATA_DIR)",
        dir.display()
    );
    dir
}

/// The `ghevents` binary, built on first use.
pub fn ghevents_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args(["build", "-q", "-p", "ghevents-cli", "--bin", "ghevents"])
            .current_dir(repo_root());
        // `cargo test` describes this package to the test in CARGO_PKG_*, CARGO_MANIFEST_*, …;
        // ring's build script reruns when those change, so passing them on would rebuild ring
        // here and again at the next `cargo test` (about 30 s each time).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .iter()
            .any(|p| name.starts_with(p))
            {
                build.env_remove(name.as_ref());
            }
        }
        let status = build.status().expect("running cargo build for ghevents");
        assert!(status.success(), "cargo build of ghevents failed");
    });
    target.join("debug/ghevents")
}
