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

#[tokio::test]
async fn bare_status_carries_none_of_githubs_headers_but_is_charged() {
    let mut cfg = manual(FILE, 100);
    cfg.limit_anonymous = 5;
    let sim = start(cfg).await;
    let url = format!("{}/events", sim.url());
    // The JSON form, as the campaign arms it.
    let ctl = client()
        .post(format!("{}/_sim/faults", sim.url()))
        .body(r#"{"path_prefix":"/events","count":1,"fault":{"kind":"bare","code":429}}"#)
        .send()
        .await
        .expect("control answered");
    assert_eq!(ctl.status(), 200);
    sim.inject(FaultRule::new("/events", 1, Fault::Bare { code: 503 }));
    for code in [429, 503] {
        let resp = get(&url).await;
        assert_eq!(resp.status(), code);
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-used",
            "retry-after",
            "x-github-request-id",
        ] {
            assert!(!resp.headers().contains_key(h), "{code} carries {h}");
        }
    }
    let ok = get(&url).await;
    assert_eq!(ok.status(), 200);
    // Both bare answers were charged: 3 of 5 used.
    assert_eq!(header_num(&ok, "x-ratelimit-remaining"), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn absurd_retry_after_and_poll_interval_are_sent_verbatim() {
    let sim = start(manual(FILE, 100)).await;
    let url = format!("{}/events", sim.url());
    sim.inject(FaultRule::new(
        "/events",
        1,
        "retry_after=10000000000000".parse().expect("valid"),
    ));
    sim.inject(FaultRule::new(
        "/users/",
        1,
        Fault::RetryAfter {
            code: 403,
            secs: 1_000_000_000,
        },
    ));
    sim.inject(FaultRule::new(
        "/events",
        1,
        Fault::PollInterval {
            secs: 1_000_000_000,
        },
    ));
    let resp = get(&url).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "10000000000000");
    assert!(resp.headers().contains_key("x-ratelimit-remaining"));
    let resp = get(&format!("{}/users/someone", sim.url())).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "retry-after"), "1000000000");
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-poll-interval"), "1000000000");
    assert_eq!(ids(&resp.bytes().await.expect("body")).len(), 30);
    // Not a real secondary limit: nothing is blocked and nothing counts as a violation.
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-poll-interval"), "60");
    assert_eq!(sim.stats().violations(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lone_surrogate_poisons_one_event_for_good() {
    let sim = start(manual(FILE, 100)).await;
    let url = format!("{}/events?per_page=5", sim.url());
    let clean = get(&url).await.bytes().await.expect("body");
    sim.inject(FaultRule::new("/events", 1, Fault::LoneSurrogate));
    for _ in 0..2 {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("body");
        assert_eq!(
            body.windows(6).filter(|w| w == br"\ud83d").count(),
            1,
            "exactly one lone surrogate, on every later page too"
        );
        // Valid JSON text, which serde_json refuses to turn into a string.
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(&body).expect("still a JSON array");
        assert_eq!(items.len(), 5);
        assert!(serde_json::from_str::<serde_json::Value>(items[0].get()).is_err());
        assert!(items[0].get().starts_with(r#"{"sim_note":"\ud83d","#));
        assert_eq!(items[1].get().as_bytes(), {
            let v: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(&clean).expect("array");
            v[1].get().as_bytes().to_vec()
        });
    }
    let stats = sim.stats();
    assert_eq!(stats.poisoned_ids, vec![ids(&clean)[0].clone()]);
    // Served ids count the poisoned event like any other.
    assert_eq!(stats.served_ids[&ids(&clean)[0]], 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn unauthorized_on_users_and_repos_says_bad_credentials() {
    let sim = start(manual(FILE, 100)).await;
    sim.inject(FaultRule::new("/users/", 1, Fault::Status { code: 401 }));
    sim.inject(FaultRule::new("/repos/", 1, Fault::Status { code: 401 }));
    for path in ["/users/a", "/repos/a/b"] {
        let resp = get(&format!("{}{path}", sim.url())).await;
        assert_eq!(resp.status(), 401);
        let body: serde_json::Value = resp.json().await.expect("JSON");
        assert_eq!(body["message"], "Bad credentials");
    }
    sim.shutdown().await;
}
