//! `GET /events`: pagination cap, Link headers, 422, per_page clamping, bytes, ETags.

use std::collections::HashSet;

use crate::common::*;

const BIG: &str = "2015-01-01-0.json.gz";

#[tokio::test]
async fn pages_follow_links_up_to_the_300_cap() {
    let sim = start(manual(BIG, 500)).await;
    let first = get(&format!("{}/events", sim.url())).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(header(&first, "x-poll-interval"), "60");
    assert!(header(&first, "cache-control").contains("max-age=60"));
    assert!(first.headers().contains_key("last-modified"));
    let l = links(&first);
    assert_eq!(l.len(), 2, "page 1 has next and last only: {l:?}");
    assert_eq!(l["next"], format!("{}/events?page=2", sim.url()));
    assert_eq!(l["last"], format!("{}/events?page=10", sim.url()));

    // Walk the pages by their links, as a client would.
    let mut seen = ids(&first.bytes().await.expect("body"));
    let mut next = l.get("next").cloned();
    let mut pages = 1;
    while let Some(url) = next {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200, "{url}");
        let l = links(&resp);
        pages += 1;
        if pages < 10 {
            assert_eq!(
                l.len(),
                4,
                "middle page {pages} has prev/next/last/first: {l:?}"
            );
            assert_eq!(
                l["prev"],
                format!("{}/events?page={}", sim.url(), pages - 1)
            );
            assert_eq!(l["first"], format!("{}/events?page=1", sim.url()));
        } else {
            assert!(!l.contains_key("next") && !l.contains_key("last"), "{l:?}");
            assert_eq!(l["prev"], format!("{}/events?page=9", sim.url()));
        }
        next = l.get("next").cloned();
        seen.extend(ids(&resp.bytes().await.expect("body")));
        assert!(pages <= 10, "links went past page 10");
    }
    assert_eq!(pages, 10);
    assert_eq!(seen.len(), 300);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        300,
        "no id twice"
    );
    assert_eq!(seen, newest(&sim, 300), "the newest 300, newest first");
    sim.shutdown().await;
}

#[tokio::test]
async fn beyond_300_is_422_with_githubs_body() {
    let sim = start(manual(BIG, 400)).await;
    for q in [
        "page=11",
        "per_page=100&page=4",
        "per_page=50&page=7",
        "per_page=1&page=301",
    ] {
        let resp = get(&format!("{}/events?{q}", sim.url())).await;
        assert_eq!(resp.status(), 422, "{q}");
        assert!(header_num(&resp, "x-ratelimit-used") > 0, "422 is charged");
        let body = resp.text().await.expect("body");
        assert_eq!(
            body,
            r#"{"message":"In order to keep the API fast for everyone, pagination is limited for this resource.","documentation_url":"https://docs.github.com/v3/#pagination","status":"422"}"#
        );
    }
    for (q, n) in [
        ("per_page=100&page=3", 100),
        ("page=10", 30),
        ("per_page=1&page=300", 1),
    ] {
        let resp = get(&format!("{}/events?{q}", sim.url())).await;
        assert_eq!(resp.status(), 200, "{q}");
        assert_eq!(ids(&resp.bytes().await.expect("body")).len(), n, "{q}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn per_page_is_clamped_and_echoed_in_links() {
    let sim = start(manual(BIG, 300)).await;
    for (q, n) in [
        ("per_page=0", 1),
        ("per_page=-5", 1),
        ("per_page=1000", 100),
        ("per_page=abc", 30),
        ("per_page=7", 7),
    ] {
        let resp = get(&format!("{}/events?{q}", sim.url())).await;
        assert_eq!(resp.status(), 200, "{q}");
        let body = resp.bytes().await.expect("body");
        assert_eq!(ids(&body).len(), n, "{q}");
    }
    let resp = get(&format!("{}/events?per_page=1000", sim.url())).await;
    let l = links(&resp);
    assert_eq!(
        l["last"],
        format!("{}/events?per_page=100&page=3", sim.url())
    );
    assert_eq!(
        l["next"],
        format!("{}/events?per_page=100&page=2", sim.url())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fewer_than_300_released_shortens_the_last_page() {
    let sim = start(manual("2021-07-21-first-200-of-hours-06-09.json.gz", 45)).await;
    let resp = get(&format!("{}/events", sim.url())).await;
    assert_eq!(links(&resp)["last"], format!("{}/events?page=2", sim.url()));
    let resp = get(&format!("{}/events?page=2", sim.url())).await;
    assert!(!links(&resp).contains_key("next"));
    assert_eq!(ids(&resp.bytes().await.expect("body")).len(), 15);
    let resp = get(&format!("{}/events?page=3", sim.url())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "[]");
    // Releasing moves the window: the newest event comes first.
    sim.release(5);
    let resp = get(&format!("{}/events?per_page=5", sim.url())).await;
    assert_eq!(ids(&resp.bytes().await.expect("body")), newest(&sim, 5));
    assert_eq!(sim.released(), 50);
    sim.shutdown().await;
}

#[tokio::test]
async fn body_is_the_source_lines_byte_for_byte() {
    // The 2012 hour holds a raw U+2028 at line 1554: release up to it so it
    // is the newest event, then compare whole pages with the file's bytes.
    let file = "2012-04-01-0.json.gz";
    let src = lines(file);
    let sep = "\u{2028}".as_bytes();
    let at = src
        .iter()
        .position(|l| l.windows(sep.len()).any(|w| w == sep))
        .expect("the file holds a U+2028 line");
    let sim = start(manual(file, at + 1)).await;
    for page in 1..=3 {
        let resp = get(&format!("{}/events?per_page=100&page={page}", sim.url())).await;
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("body");
        let mut want = b"[".to_vec();
        let top = at + 1 - (page - 1) * 100;
        for (i, idx) in (top - 100..top).rev().enumerate() {
            if i > 0 {
                want.push(b',');
            }
            want.extend_from_slice(&src[idx]);
        }
        want.push(b']');
        assert!(
            body[..] == want[..],
            "page {page} differs from the source lines"
        );
        if page == 1 {
            assert!(body.windows(sep.len()).any(|w| w == sep), "raw U+2028 kept");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn etag_gives_free_304_by_default() {
    let sim = start(manual(BIG, 300)).await;
    let c = client();
    let url = format!("{}/events", sim.url());
    let first = c.get(&url).send().await.expect("answered");
    let etag = header(&first, "etag");
    assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
    assert_eq!(header_num(&first, "x-ratelimit-remaining"), 59);

    let again = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert_eq!(header(&again, "x-poll-interval"), "60");
    assert_eq!(
        header_num(&again, "x-ratelimit-remaining"),
        59,
        "304 is free"
    );
    assert!(again.bytes().await.expect("body").is_empty());

    // Another page has another ETag; new events change page 1's ETag.
    let p2 = c
        .get(format!("{url}?page=2"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(p2.status(), 200);
    assert_ne!(header(&p2, "etag"), etag);
    sim.release(1);
    let changed = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(changed.status(), 200);
    assert_ne!(header(&changed, "etag"), etag);
    assert_eq!(header_num(&changed, "x-ratelimit-remaining"), 57);

    let stats = sim.stats();
    let me = stats.anonymous().expect("client recorded");
    assert_eq!(me.count(github_sim::PathKind::Events, 304), 1);
    assert_eq!(me.count(github_sim::PathKind::Events, 200), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn etag_304_costs_when_configured() {
    let sim = start(github_sim::SimConfig {
        conditional_costs: true,
        ..manual(BIG, 300)
    })
    .await;
    let c = client();
    let url = format!("{}/events", sim.url());
    let first = c.get(&url).send().await.expect("answered");
    let etag = header(&first, "etag");
    let again = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), 304);
    assert_eq!(
        header_num(&again, "x-ratelimit-remaining"),
        58,
        "304 charged"
    );
    assert_eq!(header_num(&again, "x-ratelimit-used"), 2);
    sim.shutdown().await;
}
