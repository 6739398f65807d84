//! `/users/{login}` and `/repos/{owner}/{repo}` bodies synthesized from the
//! actor, org and repo objects of the loaded events. Every value not found in
//! the events is derived from the id, so answers are stable across runs.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::timeline::Event;

const API: &str = "https://api.github.com";
const WEB: &str = "https://github.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Bot,
    Organization,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Bot => "Bot",
            Kind::Organization => "Organization",
        }
    }

    fn node_prefix(self) -> &'static str {
        match self {
            Kind::User => "04:User",
            Kind::Bot => "03:Bot",
            Kind::Organization => "012:Organization",
        }
    }
}

#[derive(Debug, Clone)]
struct Account {
    id: u64,
    login: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
struct Repo {
    id: u64,
    full_name: String,
    last_event: Option<DateTime<Utc>>,
}

/// A rendered resource: body bytes plus what its caching headers need.
#[derive(Debug, Clone)]
pub struct Resource {
    pub body: Bytes,
    /// Strong ETag, quotes included.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
}

/// Users, organisations and repositories seen in the events, plus the gone lists.
#[derive(Debug, Default)]
pub struct Directory {
    accounts: HashMap<String, Account>,
    repos: HashMap<String, Repo>,
    gone_users: HashSet<String>,
    gone_repos: HashSet<String>,
}

fn key(s: &str) -> String {
    s.to_ascii_lowercase()
}

impl Directory {
    /// Index every event (released or not). Later events win on renames.
    pub fn from_events(events: &[Event]) -> Self {
        let mut d = Directory::default();
        for ev in events {
            if let Some(a) = &ev.actor {
                let kind = if a.login.ends_with("[bot]") {
                    Kind::Bot
                } else {
                    Kind::User
                };
                d.accounts.insert(
                    key(&a.login),
                    Account {
                        id: a.id,
                        login: a.login.clone(),
                        kind,
                    },
                );
            }
            if let Some(o) = &ev.org {
                d.accounts.insert(
                    key(&o.login),
                    Account {
                        id: o.id,
                        login: o.login.clone(),
                        kind: Kind::Organization,
                    },
                );
            }
            if let Some((id, name)) = &ev.repo {
                let at = ev
                    .created_at
                    .as_deref()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
                let entry = d.repos.entry(key(name)).or_insert_with(|| Repo {
                    id: *id,
                    full_name: name.clone(),
                    last_event: None,
                });
                entry.id = *id;
                entry.full_name.clone_from(name);
                entry.last_event = entry.last_event.max(at);
            }
        }
        d
    }

    pub fn users_known(&self) -> usize {
        self.accounts.len()
    }

    pub fn repos_known(&self) -> usize {
        self.repos.len()
    }

    pub fn mark_user_gone(&mut self, login: &str) {
        self.gone_users.insert(key(login));
    }

    pub fn mark_repo_gone(&mut self, full_name: &str) {
        self.gone_repos.insert(key(full_name));
    }

    /// The `/users/{login}` body, or `None` for 404.
    pub fn user(&self, login: &str) -> Option<Resource> {
        let k = key(login);
        if self.gone_users.contains(&k) {
            return None;
        }
        let a = self.accounts.get(&k)?;
        let body = user_json(a);
        Some(resource(&body, &body.updated_at))
    }

    /// The `/repos/{owner}/{name}` body, or `None` for 404.
    pub fn repo(&self, owner: &str, name: &str) -> Option<Resource> {
        let k = key(&format!("{owner}/{name}"));
        if self.gone_repos.contains(&k) {
            return None;
        }
        let r = self.repos.get(&k)?;
        let owner_login = r.full_name.split('/').next().unwrap_or(owner);
        let owner = self
            .accounts
            .get(&key(owner_login))
            .cloned()
            .unwrap_or_else(|| {
                let kind = if owner_login.ends_with("[bot]") {
                    Kind::Bot
                } else {
                    Kind::User
                };
                Account {
                    // Not seen in any event: a stable made-up id.
                    id: 1_000_000 + mix(hash_str(owner_login)) % 200_000_000,
                    login: owner_login.to_string(),
                    kind,
                }
            });
        let body = repo_json(r, &owner);
        Some(resource(&body, &body.updated_at))
    }
}

fn resource<T: Serialize>(value: &T, updated_at: &str) -> Resource {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let etag = format!("\"{}\"", hex(&Sha256::digest(&body)));
    let last_modified = DateTime::parse_from_rfc3339(updated_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    Resource {
        body: Bytes::from(body),
        etag,
        last_modified,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// deterministic values

fn mix(mut z: u64) -> u64 {
    // splitmix64
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// A small stream of numbers derived from one id.
struct Dice(u64);

impl Dice {
    fn new(id: u64, salt: u64) -> Self {
        Dice(mix(id ^ salt.rotate_left(32)))
    }
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let n = items.len() as u64;
        usize::try_from(self.below(n))
            .ok()
            .and_then(|i| items.get(i))
            .copied()
            .unwrap_or("")
    }
    /// Heavy-tailed count: mostly small, sometimes large.
    fn count(&mut self, scale: u64) -> u64 {
        let r = self.below(1000);
        match r {
            0..=599 => self.below(scale / 10 + 1),
            600..=949 => self.below(scale + 1),
            _ => self.below(scale * 50 + 1),
        }
    }
}

fn date(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

/// Interpolate a creation date from an id, GitHub ids growing with time.
fn date_for_id(id: u64, anchors: &[(u64, (i32, u32, u32))], jitter: u64) -> DateTime<Utc> {
    let pts: Vec<(f64, DateTime<Utc>)> = anchors
        .iter()
        .map(|&(i, (y, m, d))| (i as f64, date(y, m, d)))
        .collect();
    let x = id as f64;
    let (a, b) = match pts.iter().position(|(i, _)| *i >= x) {
        Some(0) => (pts[0], pts[1]),
        Some(p) => (pts[p - 1], pts[p]),
        None => (pts[pts.len() - 2], pts[pts.len() - 1]),
    };
    let span = (b.1 - a.1).num_seconds() as f64;
    let frac = (x - a.0) / (b.0 - a.0).max(1.0);
    // Ids far outside the anchors must not overflow the date arithmetic.
    let secs = ((span * frac) as i64).clamp(-4_000_000_000, 4_000_000_000) + (jitter % 3600) as i64;
    let t = ChronoDuration::try_seconds(secs)
        .and_then(|d| a.1.checked_add_signed(d))
        .unwrap_or(a.1);
    t.clamp(date(2007, 10, 20), date(2026, 6, 30))
}

const USER_ANCHORS: &[(u64, (i32, u32, u32))] = &[
    (1, (2007, 10, 20)),
    (327_146, (2010, 7, 9)),
    (1_000_000, (2011, 8, 20)),
    (5_000_000, (2013, 7, 10)),
    (10_000_000, (2014, 12, 10)),
    (50_000_000, (2019, 5, 20)),
    (100_000_000, (2022, 2, 10)),
    (200_000_000, (2025, 2, 1)),
    (281_000_000, (2026, 6, 1)),
];

const REPO_ANCHORS: &[(u64, (i32, u32, u32))] = &[
    (1, (2008, 1, 15)),
    (1_000_000, (2010, 11, 1)),
    (3_544_490, (2012, 2, 25)),
    (28_000_000, (2014, 12, 20)),
    (100_000_000, (2017, 8, 10)),
    (214_771_321, (2019, 10, 12)),
    (400_000_000, (2021, 9, 10)),
    (700_000_000, (2023, 10, 10)),
    (915_561_009, (2025, 1, 10)),
    (1_251_357_380, (2026, 5, 30)),
];

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sym = |shift: u32| char::from(T[((n >> shift) & 63) as usize]);
        out.push(sym(18));
        out.push(sym(12));
        out.push(if chunk.len() > 1 { sym(6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(0) } else { '=' });
    }
    out
}

/// GitHub's legacy global node id, e.g. `MDQ6VXNlcjMyNzE0Ng==` for user 327146.
fn node_id(prefix: &str, id: u64) -> String {
    base64(format!("{prefix}{id}").as_bytes())
}

/// Logins of bots hold brackets, which GitHub escapes in its API URLs.
fn url_login(login: &str) -> String {
    login.replace('[', "%5B").replace(']', "%5D")
}

// ---------------------------------------------------------------------------
// JSON shapes (field order as GitHub sends them)

#[derive(Serialize)]
struct SimpleUser {
    login: String,
    id: u64,
    node_id: String,
    avatar_url: String,
    gravatar_id: &'static str,
    url: String,
    html_url: String,
    followers_url: String,
    following_url: String,
    gists_url: String,
    starred_url: String,
    subscriptions_url: String,
    organizations_url: String,
    repos_url: String,
    events_url: String,
    received_events_url: String,
    #[serde(rename = "type")]
    kind: &'static str,
    user_view_type: &'static str,
    site_admin: bool,
}

fn simple_user(a: &Account) -> SimpleUser {
    let u = format!("{API}/users/{}", url_login(&a.login));
    let html_url = match a.kind {
        Kind::Bot => format!("{WEB}/apps/{}", a.login.trim_end_matches("[bot]")),
        _ => format!("{WEB}/{}", a.login),
    };
    SimpleUser {
        login: a.login.clone(),
        id: a.id,
        node_id: node_id(a.kind.node_prefix(), a.id),
        avatar_url: format!("https://avatars.githubusercontent.com/u/{}?v=4", a.id),
        gravatar_id: "",
        html_url,
        followers_url: format!("{u}/followers"),
        following_url: format!("{u}/following{{/other_user}}"),
        gists_url: format!("{u}/gists{{/gist_id}}"),
        starred_url: format!("{u}/starred{{/owner}}{{/repo}}"),
        subscriptions_url: format!("{u}/subscriptions"),
        organizations_url: format!("{u}/orgs"),
        repos_url: format!("{u}/repos"),
        events_url: format!("{u}/events{{/privacy}}"),
        received_events_url: format!("{u}/received_events"),
        url: u,
        kind: a.kind.as_str(),
        user_view_type: "public",
        site_admin: false,
    }
}

#[derive(Serialize)]
struct FullUser {
    #[serde(flatten)]
    simple: SimpleUser,
    name: Option<String>,
    company: Option<String>,
    blog: String,
    location: Option<&'static str>,
    email: Option<String>,
    hireable: Option<bool>,
    bio: Option<String>,
    twitter_username: Option<String>,
    public_repos: u64,
    public_gists: u64,
    followers: u64,
    following: u64,
    created_at: String,
    updated_at: String,
}

const LOCATIONS: &[&str] = &[
    "Berlin, Germany",
    "San Francisco, CA",
    "Bangalore, India",
    "London",
    "São Paulo, Brazil",
    "Tokyo, Japan",
    "Beijing, China",
    "Paris, France",
    "Toronto, Canada",
    "Lagos, Nigeria",
];

const BIOS: &[&str] = &[
    "Software engineer.",
    "Open source enthusiast",
    "Student",
    "Building things on the web.",
    "Backend developer | Rust, Go",
    "Data scientist",
];

fn titlecase(login: &str) -> String {
    login
        .split(['-', '_', '.'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn user_json(a: &Account) -> FullUser {
    let mut d = Dice::new(a.id, 0x5553);
    let created = date_for_id(a.id, USER_ANCHORS, d.next());
    let updated = (created + ChronoDuration::days(d.below(3000) as i64)).min(date(2026, 6, 1));
    let updated = updated.max(created);
    let bot = a.kind == Kind::Bot;
    let org = a.kind == Kind::Organization;
    FullUser {
        simple: simple_user(a),
        name: (!bot && d.chance(70)).then(|| titlecase(&a.login)),
        company: (!bot && !org && d.chance(30))
            .then(|| format!("@{}", d.pick(&["acme", "initech", "globex", "umbrella"]))),
        blog: if !bot && d.chance(35) {
            format!("https://{}.github.io", a.login.to_ascii_lowercase())
        } else {
            String::new()
        },
        location: (!bot && d.chance(55)).then(|| d.pick(LOCATIONS)),
        email: None,
        hireable: None,
        bio: (!bot && d.chance(40)).then(|| d.pick(BIOS).to_string()),
        twitter_username: None,
        public_repos: if bot { 0 } else { d.count(40) },
        public_gists: if bot { 0 } else { d.count(5) },
        followers: if bot { 0 } else { d.count(30) },
        following: if bot || org { 0 } else { d.count(20) },
        created_at: ts(created),
        updated_at: ts(updated),
    }
}

#[derive(Serialize)]
struct License {
    key: &'static str,
    name: &'static str,
    spdx_id: &'static str,
    url: String,
    node_id: &'static str,
}

#[derive(Serialize)]
struct FullRepo {
    id: u64,
    node_id: String,
    name: String,
    full_name: String,
    private: bool,
    owner: SimpleUser,
    html_url: String,
    description: Option<String>,
    fork: bool,
    url: String,
    forks_url: String,
    keys_url: String,
    collaborators_url: String,
    teams_url: String,
    hooks_url: String,
    issue_events_url: String,
    events_url: String,
    assignees_url: String,
    branches_url: String,
    tags_url: String,
    blobs_url: String,
    git_tags_url: String,
    git_refs_url: String,
    trees_url: String,
    statuses_url: String,
    languages_url: String,
    stargazers_url: String,
    contributors_url: String,
    subscribers_url: String,
    subscription_url: String,
    commits_url: String,
    git_commits_url: String,
    comments_url: String,
    issue_comment_url: String,
    contents_url: String,
    compare_url: String,
    merges_url: String,
    archive_url: String,
    downloads_url: String,
    issues_url: String,
    pulls_url: String,
    milestones_url: String,
    notifications_url: String,
    labels_url: String,
    releases_url: String,
    deployments_url: String,
    created_at: String,
    updated_at: String,
    pushed_at: String,
    git_url: String,
    ssh_url: String,
    clone_url: String,
    svn_url: String,
    homepage: Option<String>,
    size: u64,
    stargazers_count: u64,
    watchers_count: u64,
    language: Option<&'static str>,
    has_issues: bool,
    has_projects: bool,
    has_downloads: bool,
    has_wiki: bool,
    has_pages: bool,
    has_discussions: bool,
    forks_count: u64,
    mirror_url: Option<String>,
    archived: bool,
    disabled: bool,
    open_issues_count: u64,
    license: Option<License>,
    allow_forking: bool,
    is_template: bool,
    web_commit_signoff_required: bool,
    topics: Vec<&'static str>,
    visibility: &'static str,
    forks: u64,
    open_issues: u64,
    watchers: u64,
    default_branch: &'static str,
    network_count: u64,
    subscribers_count: u64,
}

const LANGUAGES: &[&str] = &[
    "JavaScript",
    "Python",
    "Java",
    "TypeScript",
    "Go",
    "Rust",
    "C++",
    "C",
    "Ruby",
    "PHP",
    "Shell",
    "HTML",
];

const TOPICS: &[&str] = &["api", "cli", "web", "tooling", "data", "library"];

fn repo_json(r: &Repo, owner: &Account) -> FullRepo {
    let mut d = Dice::new(r.id, 0x5250);
    let mut created = date_for_id(r.id, REPO_ANCHORS, d.next());
    let pushed = r
        .last_event
        .unwrap_or_else(|| created + ChronoDuration::days(d.below(400) as i64));
    if created > pushed {
        created = pushed
            .checked_sub_signed(ChronoDuration::hours(1 + d.below(48) as i64))
            .unwrap_or(pushed);
    }
    let updated = pushed;
    let name = r
        .full_name
        .split_once('/')
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| r.full_name.clone());
    let full = &r.full_name;
    let u = format!("{API}/repos/{full}");
    let stars = d.count(20);
    let forks = d.count(5);
    let open_issues = d.count(4);
    let license = d.chance(45).then(|| {
        let (key, lname, spdx, node) = match d.below(3) {
            0 => ("mit", "MIT License", "MIT", "MDc6TGljZW5zZTEz"),
            1 => (
                "apache-2.0",
                "Apache License 2.0",
                "Apache-2.0",
                "MDc6TGljZW5zZTI=",
            ),
            _ => (
                "gpl-3.0",
                "GNU General Public License v3.0",
                "GPL-3.0",
                "MDc6TGljZW5zZTk=",
            ),
        };
        License {
            key,
            name: lname,
            spdx_id: spdx,
            url: format!("{API}/licenses/{key}"),
            node_id: node,
        }
    });
    let topics = if d.chance(30) {
        let mut t = vec![d.pick(TOPICS), d.pick(TOPICS)];
        t.sort_unstable();
        t.dedup();
        t
    } else {
        Vec::new()
    };
    FullRepo {
        id: r.id,
        node_id: node_id("010:Repository", r.id),
        name: name.clone(),
        full_name: full.clone(),
        private: false,
        owner: simple_user(owner),
        html_url: format!("{WEB}/{full}"),
        description: d.chance(70).then(|| {
            format!(
                "{} {}",
                titlecase(&name),
                d.pick(&[
                    "project",
                    "tools",
                    "experiments",
                    "for the web",
                    "library",
                    "notes"
                ])
            )
        }),
        fork: d.chance(10),
        forks_url: format!("{u}/forks"),
        keys_url: format!("{u}/keys{{/key_id}}"),
        collaborators_url: format!("{u}/collaborators{{/collaborator}}"),
        teams_url: format!("{u}/teams"),
        hooks_url: format!("{u}/hooks"),
        issue_events_url: format!("{u}/issues/events{{/number}}"),
        events_url: format!("{u}/events"),
        assignees_url: format!("{u}/assignees{{/user}}"),
        branches_url: format!("{u}/branches{{/branch}}"),
        tags_url: format!("{u}/tags"),
        blobs_url: format!("{u}/git/blobs{{/sha}}"),
        git_tags_url: format!("{u}/git/tags{{/sha}}"),
        git_refs_url: format!("{u}/git/refs{{/sha}}"),
        trees_url: format!("{u}/git/trees{{/sha}}"),
        statuses_url: format!("{u}/statuses/{{sha}}"),
        languages_url: format!("{u}/languages"),
        stargazers_url: format!("{u}/stargazers"),
        contributors_url: format!("{u}/contributors"),
        subscribers_url: format!("{u}/subscribers"),
        subscription_url: format!("{u}/subscription"),
        commits_url: format!("{u}/commits{{/sha}}"),
        git_commits_url: format!("{u}/git/commits{{/sha}}"),
        comments_url: format!("{u}/comments{{/number}}"),
        issue_comment_url: format!("{u}/issues/comments{{/number}}"),
        contents_url: format!("{u}/contents/{{+path}}"),
        compare_url: format!("{u}/compare/{{base}}...{{head}}"),
        merges_url: format!("{u}/merges"),
        archive_url: format!("{u}/{{archive_format}}{{/ref}}"),
        downloads_url: format!("{u}/downloads"),
        issues_url: format!("{u}/issues{{/number}}"),
        pulls_url: format!("{u}/pulls{{/number}}"),
        milestones_url: format!("{u}/milestones{{/number}}"),
        notifications_url: format!("{u}/notifications{{?since,all,participating}}"),
        labels_url: format!("{u}/labels{{/name}}"),
        releases_url: format!("{u}/releases{{/id}}"),
        deployments_url: format!("{u}/deployments"),
        url: u,
        created_at: ts(created),
        updated_at: ts(updated),
        pushed_at: ts(pushed),
        git_url: format!("git://github.com/{full}.git"),
        ssh_url: format!("git@github.com:{full}.git"),
        clone_url: format!("{WEB}/{full}.git"),
        svn_url: format!("{WEB}/{full}"),
        homepage: d.chance(15).then(|| {
            format!(
                "https://{}.github.io/{name}",
                owner.login.to_ascii_lowercase()
            )
        }),
        size: d.count(2000),
        stargazers_count: stars,
        watchers_count: stars,
        language: d.chance(85).then(|| d.pick(LANGUAGES)),
        has_issues: true,
        has_projects: true,
        has_downloads: true,
        has_wiki: d.chance(60),
        has_pages: d.chance(10),
        has_discussions: d.chance(5),
        forks_count: forks,
        mirror_url: None,
        archived: d.chance(3),
        disabled: false,
        open_issues_count: open_issues,
        license,
        allow_forking: true,
        is_template: false,
        web_commit_signoff_required: false,
        topics,
        visibility: "public",
        forks,
        open_issues,
        watchers: stars,
        default_branch: if created.year() < 2020 {
            "master"
        } else {
            "main"
        },
        network_count: forks,
        subscribers_count: d.count(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_match_github() {
        assert_eq!(node_id("04:User", 327146), "MDQ6VXNlcjMyNzE0Ng==");
        assert_eq!(
            node_id("010:Repository", 3544490),
            "MDEwOlJlcG9zaXRvcnkzNTQ0NDkw"
        );
        assert_eq!(
            node_id("012:Organization", 11288996),
            "MDEyOk9yZ2FuaXphdGlvbjExMjg4OTk2"
        );
    }

    #[test]
    fn dates_follow_ids() {
        let a = date_for_id(327_146, USER_ANCHORS, 0);
        let b = date_for_id(9_152_315, USER_ANCHORS, 0);
        assert!(a < b);
        assert_eq!(a.format("%Y").to_string(), "2010");
        assert_eq!(date_for_id(3_544_490, REPO_ANCHORS, 0), date(2012, 2, 25));
        assert_eq!(
            date_for_id(u64::MAX, USER_ANCHORS, u64::MAX),
            date(2026, 6, 30)
        );
        assert!(date_for_id(0, REPO_ANCHORS, 0) < date(2008, 1, 15));
    }
}
