//! Logins and repository names as they go into request paths.
//!
//! The names come from events, not from us: one holding `..`, `?`, `#`, `%` or another `/`
//! would send the token to another endpoint. A name is requested only when it is in GitHub's
//! own character set, and each path segment is percent-encoded even then.

use super::GithubError;

/// `/users/{login}`, or why the login cannot be requested.
pub fn user_path(login: &str) -> Result<String, GithubError> {
    if !is_login(login) {
        return Err(invalid("login", login));
    }
    Ok(format!("/users/{}", encode_segment(login)))
}

/// `/repos/{owner}/{repo}` for `owner/repo`, or why the name cannot be requested.
pub fn repo_path(full_name: &str) -> Result<String, GithubError> {
    match full_name.split_once('/') {
        Some((owner, name)) if is_login(owner) && is_repo_name(name) => Ok(format!(
            "/repos/{}/{}",
            encode_segment(owner),
            encode_segment(name)
        )),
        _ => Err(invalid("repository", full_name)),
    }
}

fn invalid(kind: &'static str, name: &str) -> GithubError {
    GithubError::InvalidName {
        kind,
        name: name.to_owned(),
    }
}

/// A GitHub login: 1 to 39 letters, digits, hyphens (and underscores, as managed users have),
/// not starting with a hyphen; an app's bot account adds `[bot]`. Older accounts have double
/// and trailing hyphens, which GitHub no longer allows for new ones: they are accepted.
pub fn is_login(s: &str) -> bool {
    let base = s.strip_suffix("[bot]").unwrap_or(s);
    (1..=39).contains(&base.len())
        && base.as_bytes()[0].is_ascii_alphanumeric()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A repository name (without its owner): 1 to 100 letters, digits, `.`, `-`, `_`; not `.`
/// or `..`.
pub fn is_repo_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_seen_in_real_events_are_requested() {
        for login in [
            "octocat",
            "sumitragho",
            "a",
            "Chris--A",
            "yev---",
            "kay-",
            "dependabot[bot]",
            "github-actions[bot]",
            "octocat_acme",
            "abcdefghijklmnopqrstuvwxyz0123456789abc",
        ] {
            assert!(is_login(login), "{login}");
        }
        assert_eq!(
            user_path("dependabot[bot]").unwrap(),
            "/users/dependabot%5Bbot%5D"
        );
        assert_eq!(user_path("Chris--A").unwrap(), "/users/Chris--A");
    }

    #[test]
    fn names_that_would_leave_the_endpoint_are_refused() {
        for login in [
            "",
            "-octocat",
            "..",
            ".",
            "a/b",
            "a?b=1",
            "a#b",
            "a%2e",
            "a b",
            "[bot]",
            "é",
            "abcdefghijklmnopqrstuvwxyz0123456789abcd",
        ] {
            assert!(!is_login(login), "{login}");
            let e = user_path(login).unwrap_err();
            assert!(!e.is_retryable(), "{e}");
            assert_eq!(e.code(), "invalid_name");
        }
        for name in [
            "",
            "owner",
            "owner/",
            "/repo",
            "/",
            "owner/..",
            "owner/.",
            "owner/..%2f..",
            "a/b?x=1",
            "a/b#frag",
            "a/b/c",
            "../b",
            "-a/b",
            "a/b c",
        ] {
            let e = repo_path(name).unwrap_err();
            assert!(
                matches!(&e, GithubError::InvalidName { kind: "repository", name: n } if n == name),
                "{name}: {e}"
            );
        }
        assert!(!is_repo_name(&"a".repeat(101)));
    }

    #[test]
    fn repository_names_seen_in_real_events_are_requested() {
        for (name, path) in [
            ("sumitragho/hcpnng", "/repos/sumitragho/hcpnng"),
            ("kay-/kay-.github.io", "/repos/kay-/kay-.github.io"),
            ("a/.github", "/repos/a/.github"),
            ("a/...", "/repos/a/..."),
            ("a/_x-y.z", "/repos/a/_x-y.z"),
        ] {
            assert_eq!(repo_path(name).unwrap(), path);
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a[b]%/?#"), "a%5Bb%5D%25%2F%3F%23");
        assert_eq!(encode_segment("A-z.0_~"), "A-z.0_~");
    }
}
