//! The public timeline: events loaded from GH Archive files, kept as their
//! original line bytes, released over time in (block-shuffled) file order.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::config::Clock;

/// The actor or organisation object of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: u64,
    pub login: String,
}

/// One loaded event: its original line and what the simulator needs from it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Arc<str>,
    pub raw: Bytes,
    pub actor: Option<Account>,
    pub org: Option<Account>,
    /// `(id, "owner/name")`.
    pub repo: Option<(u64, String)>,
    pub created_at: Option<String>,
}

/// What loading found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Non-empty lines that were not an Events-API event (bad JSON, or no `id`
    /// as in the 2012 timeline format).
    pub skipped: usize,
}

#[derive(Deserialize)]
struct Head {
    id: Option<IdField>,
    #[serde(default)]
    actor: Option<AccountField>,
    #[serde(default)]
    org: Option<AccountField>,
    #[serde(default)]
    repo: Option<RepoField>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdField {
    Str(String),
    Num(u64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AccountField {
    Obj { id: u64, login: String },
    // The 2012 timeline format has `"actor": "login"`; nothing to synthesize from.
    Other(IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RepoField {
    Obj { id: u64, name: String },
    Other(IgnoredAny),
}

fn account(field: Option<AccountField>) -> Option<Account> {
    match field {
        Some(AccountField::Obj { id, login }) if !login.is_empty() => Some(Account { id, login }),
        _ => None,
    }
}

/// Parse one NDJSON line; `None` when it is not an event with an id.
pub fn parse_line(line: &[u8]) -> Option<Event> {
    let head: Head = serde_json::from_slice(line).ok()?;
    let id: Arc<str> = match head.id? {
        IdField::Str(s) if !s.is_empty() => s.into(),
        IdField::Str(_) => return None,
        IdField::Num(n) => n.to_string().into(),
    };
    let repo = match head.repo {
        Some(RepoField::Obj { id, name }) if name.contains('/') => Some((id, name)),
        _ => None,
    };
    Some(Event {
        id,
        raw: Bytes::copy_from_slice(line),
        actor: account(head.actor),
        org: account(head.org),
        repo,
        created_at: head.created_at,
    })
}

fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = File::open(path).with_context(|| format!("reopening {}", path.display()))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// Stream the files, splitting on `\n` only (lines may hold a raw U+2028).
pub fn load_files(files: &[PathBuf]) -> anyhow::Result<(Vec<Event>, LoadReport)> {
    let mut events = Vec::new();
    let mut report = LoadReport::default();
    let mut line = Vec::with_capacity(64 * 1024);
    for path in files {
        let mut reader = open(path)?;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(body) {
                Some(ev) => events.push(ev),
                None => report.skipped += 1,
            }
        }
        tracing::info!(file = %path.display(), total = events.len(), "loaded events");
    }
    report.loaded = events.len();
    Ok((events, report))
}

/// Apply the block shuffle: each run of `block` consecutive events is permuted.
pub fn shuffle_blocks(events: &mut [Event], block: usize, seed: u64) {
    if block < 2 {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for chunk in events.chunks_mut(block) {
        chunk.shuffle(&mut rng);
    }
}

/// Release state; the event list itself never changes after start.
#[derive(Debug)]
pub struct Timeline {
    events: Arc<[Event]>,
    clock: Clock,
    initial: usize,
    rate_per_sec: f64,
    started: Instant,
    manual: usize,
    released: usize,
    last_change: SystemTime,
}

impl Timeline {
    pub fn new(events: Vec<Event>, clock: Clock, initial: usize, rate_per_sec: f64) -> Self {
        let mut t = Timeline {
            events: events.into(),
            clock,
            initial,
            rate_per_sec: if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
                rate_per_sec
            } else {
                0.0
            },
            started: Instant::now(),
            manual: 0,
            released: 0,
            last_change: SystemTime::now(),
        };
        t.refresh();
        t
    }

    pub fn events(&self) -> &Arc<[Event]> {
        &self.events
    }

    /// Bring `released` up to date with the clock; returns it.
    pub fn refresh(&mut self) -> usize {
        let by_time = match self.clock {
            Clock::Manual => 0,
            Clock::Real => {
                let n = self.started.elapsed().as_secs_f64() * self.rate_per_sec;
                if n >= usize::MAX as f64 {
                    usize::MAX
                } else {
                    n.floor() as usize
                }
            }
        };
        let target = self
            .initial
            .saturating_add(by_time)
            .saturating_add(self.manual)
            .min(self.events.len());
        if target > self.released {
            tracing::debug!(from = self.released, to = target, "released events");
            self.released = target;
            self.last_change = SystemTime::now();
        }
        self.released
    }

    /// Release `n` more events now, whatever the clock; returns the total released.
    pub fn release(&mut self, n: usize) -> usize {
        self.manual = self.manual.saturating_add(n);
        self.refresh()
    }

    pub fn released(&self) -> usize {
        self.released
    }

    /// When the newest released event became visible.
    pub fn last_change(&self) -> SystemTime {
        self.last_change
    }

    /// The newest `cap` released events, newest first.
    pub fn newest(&self, cap: usize) -> impl Iterator<Item = &Event> {
        self.events[..self.released].iter().rev().take(cap)
    }

    /// Ids of released events in release order.
    pub fn released_ids(&self) -> Vec<String> {
        self.events[..self.released]
            .iter()
            .map(|e| e.id.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Event {
        parse_line(
            format!(
                r#"{{"id":"{id}","actor":{{"id":1,"login":"a"}},"repo":{{"id":2,"name":"a/b"}}}}"#
            )
            .as_bytes(),
        )
        .expect("valid event")
    }

    #[test]
    fn parses_old_and_odd_lines() {
        assert!(parse_line(br#"{"actor":"x","repository":{}}"#).is_none());
        assert!(parse_line(b"not json").is_none());
        let e = parse_line(br#"{"id":7,"actor":"x","repo":{"id":1,"name":"noslash"}}"#)
            .expect("numeric id accepted");
        assert_eq!(&*e.id, "7");
        assert!(e.actor.is_none() && e.repo.is_none());
    }

    #[test]
    fn manual_clock_releases_only_on_demand() {
        let evs = (0..10).map(|i| ev(&i.to_string())).collect();
        let mut t = Timeline::new(evs, Clock::Manual, 3, 1000.0);
        assert_eq!(t.refresh(), 3);
        assert_eq!(t.release(4), 7);
        assert_eq!(t.release(100), 10);
        let newest: Vec<_> = t.newest(2).map(|e| e.id.to_string()).collect();
        assert_eq!(newest, ["9", "8"]);
    }
}
