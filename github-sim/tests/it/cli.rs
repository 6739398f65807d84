//! The binary: flags, printed URL, control endpoints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_url_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_github-sim"))
            .args(["--file"])
            .arg(archive("2026-06-01-15-sample7.jsonl"))
            .args([
                "--port",
                "0",
                "--initial",
                "4",
                "--manual",
                "--limit-anon",
                "5",
            ])
            .args([
                "--gone-user",
                "francods9-tech",
                "--conditional-costs",
                "true",
            ])
            .args(["--fault", "/events:1:status=503", "--poll-interval", "7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let url = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("read url");
            line.trim().to_string()
        }),
    )
    .await
    .expect("URL printed in time")
    .expect("reader");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    assert_eq!(get(&format!("{url}/events")).await.status(), 503);
    let resp = get(&format!("{url}/events")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-poll-interval"), "7");
    assert_eq!(header_num(&resp, "x-ratelimit-limit"), 5);
    assert_eq!(ids(&resp.bytes().await.expect("body")).len(), 4);
    assert_eq!(
        get(&format!("{url}/users/francods9-tech")).await.status(),
        404
    );

    let c = client();
    let r: serde_json::Value = c
        .post(format!("{url}/_sim/release"))
        .body(r#"{"count":2}"#)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(r["released"], 6);
    let health: serde_json::Value = c
        .get(format!("{url}/_sim/health"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(health["loaded"], 7);
}
