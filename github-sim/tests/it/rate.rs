//! Primary rate limits (per client and window) and secondary limits (Retry-After).

use std::time::{Duration, Instant};

use github_sim::{ClientKey, PathKind, SimConfig};

use crate::common::*;

const FILE: &str = "2026-06-01-15-sample7.jsonl";

#[tokio::test]
async fn headers_count_down_then_403_until_the_window_resets() {
    let sim = start(SimConfig {
        limit_anonymous: 3,
        window: Duration::from_millis(2500),
        ..manual(FILE, 7)
    })
    .await;
    let url = format!("{}/events", sim.url());
    let before = now_epoch();
    let mut reset = 0;
    for i in 1..=3u64 {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header_num(&resp, "x-ratelimit-limit"), 3);
        assert_eq!(header_num(&resp, "x-ratelimit-used"), i);
        assert_eq!(header_num(&resp, "x-ratelimit-remaining"), 3 - i);
        assert_eq!(header(&resp, "x-ratelimit-resource"), "core");
        reset = header_num(&resp, "x-ratelimit-reset");
        assert!(
            reset >= before + 3 && reset <= before + 4,
            "reset {reset} is the window end, rounded up"
        );
    }
    // Users and repos share the budget.
    let resp = get(&format!("{}/users/francods9-tech", sim.url())).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(header_num(&resp, "x-ratelimit-remaining"), 0);
    assert_eq!(header_num(&resp, "x-ratelimit-reset"), reset);
    assert_eq!(
        resp.text().await.expect("body"),
        r#"{"message":"API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}"#
    );
    assert_eq!(get(&url).await.status(), 403);

    let stats = sim.stats();
    let me = stats.anonymous().expect("recorded");
    assert_eq!(me.violations_exhausted, 2);
    assert_eq!(me.violations, 2);
    assert_eq!(me.count(PathKind::Events, 403), 1);
    assert_eq!(me.count(PathKind::Users, 403), 1);

    // Wait for the advertised reset (bounded), then the budget is back.
    let deadline = Instant::now() + Duration::from_secs(6);
    while now_epoch() < reset {
        assert!(Instant::now() < deadline, "reset never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header_num(&resp, "x-ratelimit-remaining"), 2);
    assert!(header_num(&resp, "x-ratelimit-reset") > reset);
    sim.shutdown().await;
}

#[tokio::test]
async fn tokens_get_their_own_budget_and_429_is_configurable() {
    let sim = start(SimConfig {
        limit_anonymous: 1,
        limit_token: 2,
        exhausted_status: 429,
        ..manual(FILE, 7)
    })
    .await;
    let c = client();
    let url = format!("{}/events", sim.url());
    // `Bearer` and `token` schemes are the same client.
    let a = c
        .get(&url)
        .header("Authorization", "Bearer sekrit")
        .send()
        .await
        .expect("answered");
    assert_eq!(header_num(&a, "x-ratelimit-limit"), 2);
    assert!(header(&a, "cache-control").starts_with("private"));
    let b = c
        .get(&url)
        .header("Authorization", "token sekrit")
        .send()
        .await
        .expect("answered");
    assert_eq!(header_num(&b, "x-ratelimit-remaining"), 0);
    let over = c
        .get(&url)
        .header("Authorization", "token sekrit")
        .send()
        .await
        .expect("answered");
    assert_eq!(over.status(), 429);
    let body: serde_json::Value = over.json().await.expect("json");
    assert!(body["message"]
        .as_str()
        .expect("message")
        .starts_with("API rate limit exceeded for user ID"));
    // The anonymous budget is untouched.
    let anon = c.get(&url).send().await.expect("answered");
    assert_eq!(anon.status(), 200);
    assert_eq!(header_num(&anon, "x-ratelimit-limit"), 1);
    assert_eq!(c.get(&url).send().await.expect("answered").status(), 429);

    let stats = sim.stats();
    let tok = stats
        .client(&ClientKey::for_token("sekrit"))
        .expect("token client recorded");
    assert_eq!((tok.requests, tok.violations), (3, 1));
    assert_eq!(stats.anonymous().expect("anon").violations, 1);
    assert!(
        !serde_json::to_string(&stats)
            .expect("json")
            .contains("sekrit"),
        "token not stored in clear"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn secondary_limit_on_nth_events_request_with_retry_after() {
    let sim = start(SimConfig {
        secondary_on_events_requests: vec![2],
        secondary_retry_after: Duration::from_secs(1),
        ..manual(FILE, 7)
    })
    .await;
    let url = format!("{}/events", sim.url());
    assert_eq!(get(&url).await.status(), 200);
    let hit = get(&url).await;
    let tripped_at = Instant::now();
    assert_eq!(hit.status(), 429);
    assert_eq!(header(&hit, "retry-after"), "1");
    assert!(
        header_num(&hit, "x-ratelimit-remaining") > 0,
        "not a primary limit"
    );
    let body: serde_json::Value = hit.json().await.expect("json");
    assert_eq!(
        body["message"],
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    );
    assert!(body["documentation_url"]
        .as_str()
        .expect("doc url")
        .starts_with("https://docs.github.com/"));

    // Ignoring Retry-After: same answer, counted as a violation.
    let early = get(&url).await;
    assert_eq!(early.status(), 429);
    assert!(early.headers().contains_key("retry-after"));
    let stats = sim.stats();
    let me = stats.anonymous().expect("recorded");
    assert_eq!(me.violations_retry_after, 1);
    assert_eq!(me.count(PathKind::Events, 429), 2);

    let wait = Duration::from_millis(1100).saturating_sub(tripped_at.elapsed());
    tokio::time::sleep(wait).await;
    let after = get(&url).await;
    assert_eq!(after.status(), 200);
    assert_eq!(sim.stats().anonymous().expect("recorded").violations, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn secondary_limit_on_demand_as_403_via_control_endpoint() {
    let sim = start(SimConfig {
        secondary_status: 403,
        secondary_retry_after: Duration::from_secs(2),
        ..manual(FILE, 7)
    })
    .await;
    let c = client();
    let ctl = c
        .post(format!("{}/_sim/secondary", sim.url()))
        .body(r#"{"count":1}"#)
        .send()
        .await
        .expect("control answered");
    assert_eq!(ctl.status(), 200);
    let resp = c
        .get(format!("{}/repos/francods9-tech/customers", sim.url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "retry-after"), "2");
    // Another client is not blocked, and the trigger was used up.
    let other = c
        .get(format!("{}/events", sim.url()))
        .header("Authorization", "Bearer other")
        .send()
        .await
        .expect("answered");
    assert_eq!(other.status(), 200);
    // Control endpoints cost nothing and are not recorded.
    let stats: github_sim::Stats = c
        .get(format!("{}/_sim/stats", sim.url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(stats.anonymous().expect("anon").requests, 1);
    assert_eq!(
        stats.anonymous().expect("anon").count(PathKind::Repos, 403),
        1
    );
    sim.shutdown().await;
}
