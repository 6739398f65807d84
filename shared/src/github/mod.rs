//! The GitHub REST client: one request at a time, each paid for from the shared [`Budget`],
//! retried (5xx, timeouts, connection errors) with jittered exponential backoff — the only
//! retry layer for GitHub calls.

mod client;
mod headers;
mod names;

pub use client::{Fetched, GithubClient, GithubConfig, GithubError, RetryPolicy};
pub use headers::{
    etag, latest_wait_end, link_next, poll_interval, retry_after, RateInfo, MAX_WAIT,
};
pub use names::{is_login, is_repo_name, repo_path, user_path};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The budget key of a token: `anonymous`, or `token:` and a short SHA-256 fingerprint.
/// The token itself is never stored or logged.
pub fn identity_of(token: Option<&SecretString>) -> String {
    match token {
        None => "anonymous".to_owned(),
        Some(t) => {
            let digest = Sha256::digest(t.expose_secret().as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("token:{hex}")
        }
    }
}
