//! Faults on demand: 5xx, truncated bodies, slow answers, dropped connections.

use std::time::{Duration, Instant};

use github_sim::{Fault, FaultRule, PathKind, STATUS_CLOSED};

use crate::common::*;

const FILE: &str = "2021-07-21-first-200-of-hours-06-09.json.gz";

#[tokio::test]
async fn status_faults_answer_5xx_then_recover() {
    let sim = start(manual(FILE, 100)).await;
    sim.inject(FaultRule::new("/events", 1, Fault::Status { code: 500 }));
    sim.inject(FaultRule::new("/events", 1, Fault::Status { code: 502 }));
    // The same through the control endpoint, as JSON.
    let ctl = client()
        .post(format!("{}/_sim/faults", sim.url()))
        .body(r#"{"path_prefix":"/events","count":1,"fault":{"kind":"status","code":503}}"#)
        .send()
        .await
        .expect("control answered");
    assert_eq!(ctl.status(), 200);
    assert_eq!(sim.pending_faults().len(), 3);

    let url = format!("{}/events", sim.url());
    // Other paths are untouched by an /events rule.
    assert_eq!(
        get(&format!("{}/users/nobody-here-xyz", sim.url()))
            .await
            .status(),
        404
    );
    for code in [500, 502, 503] {
        let resp = get(&url).await;
        assert_eq!(resp.status(), code);
        assert_eq!(
            header(&resp, "content-type"),
            "application/json; charset=utf-8"
        );
        assert!(resp.headers().contains_key("x-ratelimit-remaining"));
        let body: serde_json::Value = resp.json().await.expect("error body is JSON");
        assert!(body["message"].is_string(), "{body}");
    }
    let ok = get(&url).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ids(&ok.bytes().await.expect("body")).len(), 30);
    assert!(sim.pending_faults().is_empty());
    let stats = sim.stats();
    let me = stats.anonymous().expect("recorded");
    for code in [500, 502, 503, 200] {
        assert_eq!(me.count(PathKind::Events, code), 1, "{code}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn skip_lets_requests_through_before_the_fault() {
    let sim = start(manual(FILE, 100)).await;
    sim.inject(FaultRule::new("/events", 1, Fault::Status { code: 502 }).after(2));
    let url = format!("{}/events", sim.url());
    let got: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get(&url).await.status().as_u16());
        }
        v
    };
    assert_eq!(got, [200, 200, 502, 200]);
    sim.shutdown().await;
}

#[tokio::test]
async fn truncated_body_fails_json_parsing() {
    let sim = start(manual(FILE, 100)).await;
    let url = format!("{}/events", sim.url());
    let normal = get(&url).await;
    let etag = header(&normal, "etag");
    let full = normal.bytes().await.expect("body");

    sim.inject(FaultRule::new("/events", 1, Fault::Truncated));
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "etag"), etag, "headers of a normal page");
    assert!(links(&resp).contains_key("next"));
    let cut = resp.bytes().await.expect("the cut body is delivered");
    assert_eq!(cut.len(), full.len() / 2);
    assert_eq!(&full[..cut.len()], &cut[..]);
    assert!(serde_json::from_slice::<serde_json::Value>(&cut).is_err());

    // Through reqwest's own JSON decoding as a client would do it.
    sim.inject(FaultRule::new("/events", 1, Fault::Truncated));
    let err = get(&url).await.json::<serde_json::Value>().await;
    assert!(err.is_err(), "truncated JSON must not parse");
    // Served ids only count complete pages.
    let served: u64 = sim.stats().served_ids.values().sum();
    assert_eq!(served, 30);
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_answer_trips_a_client_timeout() {
    let sim = start(manual(FILE, 100)).await;
    sim.inject(FaultRule::new("/events", 1, Fault::Slow { ms: 3000 }));
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let url = format!("{}/events", sim.url());
    let t = Instant::now();
    let err = c
        .get(&url)
        .send()
        .await
        .expect_err("the slow answer must time out");
    assert!(err.is_timeout(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let ok = c.get(&url).send().await.expect("next answer is prompt");
    assert_eq!(ok.status(), 200);

    // A patient client gets the full answer after the delay.
    sim.inject(FaultRule::new("/users/", 1, Fault::Slow { ms: 200 }));
    let login = events(FILE)[0]["actor"]["login"]
        .as_str()
        .expect("login")
        .to_string();
    let t = Instant::now();
    let resp = get(&format!("{}/users/{login}", sim.url())).await;
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    sim.shutdown().await;
}

#[tokio::test]
async fn close_drops_the_connection_unanswered() {
    let sim = start(manual(FILE, 100)).await;
    sim.inject(FaultRule::new("/events", 1, Fault::Close));
    let c = client();
    let url = format!("{}/events", sim.url());
    let t = Instant::now();
    let err = c.get(&url).send().await.expect_err("no answer");
    assert!(!err.is_timeout(), "closed, not timed out: {err}");
    assert!(err.status().is_none());
    assert!(t.elapsed() < Duration::from_secs(5));
    // The same client recovers on a fresh connection.
    let ok = c.get(&url).send().await.expect("answered");
    assert_eq!(ok.status(), 200);
    let stats = sim.stats();
    let me = stats.anonymous().expect("recorded");
    assert_eq!(me.count(PathKind::Events, STATUS_CLOSED), 1);
    assert_eq!(me.count(PathKind::Events, 200), 1);
    sim.shutdown().await;
}
