//! Shared helpers: locating the real data, starting a simulator, HTTP plumbing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use github_sim::{Clock, Sim, SimConfig};

/// `shared/data` beside the repository, or `$GHEVENTS_DATA_DIR`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("GHEVENTS_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
    }
}

pub fn archive(name: &str) -> PathBuf {
    let p = data_dir().join("gharchive").join(name);
    assert!(p.exists(), "missing test data {}", p.display());
    p
}

/// The non-empty lines of an archive file, split on `\n` only.
pub fn lines(name: &str) -> Vec<Vec<u8>> {
    let path = archive(name);
    let file = std::fs::File::open(&path).expect("open archive");
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut out = Vec::new();
    for line in BufReader::new(reader).split(b'\n') {
        let line = line.expect("read line");
        if !line.is_empty() {
            out.push(line);
        }
    }
    out
}

/// The events of an archive file, parsed (for picking actors, repos and ids).
pub fn events(name: &str) -> Vec<serde_json::Value> {
    lines(name)
        .iter()
        .map(|l| serde_json::from_slice(l).expect("archive line is JSON"))
        .collect()
}

/// A manual-clock config over one file (nothing is released by time).
pub fn manual(file: &str, initial: usize) -> SimConfig {
    SimConfig {
        files: vec![archive(file)],
        initial,
        clock: Clock::Manual,
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> Sim {
    tokio::time::timeout(Duration::from_secs(60), Sim::start(config))
        .await
        .expect("simulator started in time")
        .expect("simulator started")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("request answered")
}

pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
        .to_str()
        .expect("ascii header")
        .to_string()
}

pub fn header_num(resp: &reqwest::Response, name: &str) -> u64 {
    header(resp, name)
        .parse()
        .unwrap_or_else(|e| panic!("header {name} not a number: {e}"))
}

/// `Link` header as rel -> URL.
pub fn links(resp: &reqwest::Response) -> HashMap<String, String> {
    let Some(v) = resp.headers().get("link") else {
        return HashMap::new();
    };
    let v = v.to_str().expect("ascii link");
    v.split(", ")
        .map(|part| {
            let (url, rel) = part.split_once("; rel=").expect("link part has rel");
            (
                rel.trim_matches('"').to_string(),
                url.trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
            )
        })
        .collect()
}

/// Ids of a page body.
pub fn ids(body: &[u8]) -> Vec<String> {
    let v: Vec<serde_json::Value> = serde_json::from_slice(body).expect("page is a JSON array");
    v.iter()
        .map(|e| e["id"].as_str().expect("string id").to_string())
        .collect()
}

/// The newest `n` released ids, newest first, per the simulator's ground truth.
pub fn newest(sim: &Sim, n: usize) -> Vec<String> {
    sim.stats()
        .released_ids
        .iter()
        .rev()
        .take(n)
        .cloned()
        .collect()
}

pub fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
