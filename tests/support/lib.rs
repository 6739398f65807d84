//! Shared test support: a fresh database per test, a GitHub stand-in that replays recorded
//! exchanges, the real data files, and the `ghevents` binary.

pub mod archive_server;
pub mod db;
pub mod emf;
pub mod fixtures;
pub mod mutate;
pub mod replay;

use ghevents_core::app::{github_config, App};
use ghevents_core::clock::Clock;
use ghevents_core::config::Config;
use ghevents_core::github::RetryPolicy;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
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

/// An `App` on `pool` talking to the GitHub stand-in at `github_url`, with these extra
/// configuration variables and, when given, a retry policy faster than production's.
pub fn app(
    github_url: &str,
    pool: &deadpool_postgres::Pool,
    clock: Arc<dyn Clock>,
    env: &[(&str, &str)],
    retry: Option<RetryPolicy>,
) -> App {
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert("GITHUB_API_URL".into(), github_url.to_owned());
    let config = Config::from_lookup(&move |k| vars.get(k).cloned()).expect("test configuration");
    let mut gh = github_config(&config);
    if let Some(retry) = retry {
        gh.retry = retry;
    }
    App::assemble(config, pool.clone(), clock, gh).expect("app")
}

/// Runs `cmd` to its end, within `limit`: its exit code (-1 when a signal ended it), stdout
/// and stderr.
pub async fn output_of(
    mut cmd: tokio::process::Command,
    limit: std::time::Duration,
) -> (i32, String, String) {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the command did not finish within {limit:?}"))
        .expect("the command ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
