//! Ground truth: released ids, served ids, poll gaps, release clock, resets.

use std::time::Duration;

use github_sim::{Clock, PathKind, SimConfig, Stats};

use crate::common::*;

const FILE: &str = "2021-07-21-first-200-of-hours-06-09.json.gz";

#[tokio::test]
async fn served_ids_and_poll_gaps_are_recorded() {
    let sim = start(manual(FILE, 50)).await;
    let c = client();
    let url = format!("{}/events?per_page=20", sim.url());
    let p1 = ids(&c
        .get(&url)
        .send()
        .await
        .expect("answered")
        .bytes()
        .await
        .expect("body"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    sim.release(5);
    let p2 = ids(&c
        .get(&url)
        .send()
        .await
        .expect("answered")
        .bytes()
        .await
        .expect("body"));
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.get(format!("{}/users/nobody-xyz", sim.url()))
        .send()
        .await
        .expect("answered");
    let _ = c.get(&url).send().await.expect("answered");

    let stats = sim.stats();
    // Released ids are the file's first 55 in order (no shuffle).
    let file_ids: Vec<String> = events(FILE)
        .iter()
        .take(55)
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(stats.released_ids, file_ids);
    assert_eq!((stats.released, stats.loaded), (55, 800));
    // Ids: the 5 new ones once, the 15 overlapping ones three times, ...
    for id in &p2[..5] {
        assert_eq!(stats.served_ids[id], 2, "{id}");
    }
    for id in &p1[..15] {
        assert_eq!(stats.served_ids[id], 3, "{id}");
    }
    for id in &p1[15..] {
        assert_eq!(stats.served_ids[id], 1, "{id}");
    }
    assert_eq!(stats.served_ids.values().sum::<u64>(), 60);

    let me = stats.anonymous().expect("recorded");
    assert_eq!(me.poll_gaps_ms.len(), 2, "gaps between /events polls only");
    assert!(me.poll_gaps_ms[0] >= 150, "{:?}", me.poll_gaps_ms);
    assert!(me.poll_gaps_ms[1] >= 60, "{:?}", me.poll_gaps_ms);
    assert_eq!(me.min_poll_gap_ms, me.poll_gaps_ms.iter().min().copied());
    assert_eq!(
        (me.total(PathKind::Events), me.total(PathKind::Users)),
        (3, 1)
    );

    // Over HTTP: the same snapshot as JSON.
    let over_http: Stats = c
        .get(format!("{}/_sim/stats", sim.url()))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(over_http, sim.stats());

    // Reset forgets requests, not the timeline.
    let reset = c
        .post(format!("{}/_sim/stats/reset", sim.url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(reset.status(), 200);
    let stats = sim.stats();
    assert!(stats.clients.is_empty() && stats.served_ids.is_empty() && stats.users.is_empty());
    assert_eq!(stats.released, 55);
    sim.shutdown().await;
}

#[tokio::test]
async fn real_clock_releases_at_the_rate_and_manual_does_not() {
    let real = start(SimConfig {
        files: vec![archive(FILE)],
        initial: 10,
        rate_per_sec: 50.0,
        clock: Clock::Real,
        ..SimConfig::default()
    })
    .await;
    let manual_sim = start(manual(FILE, 10)).await;
    let t = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = real.released();
    let elapsed = t.elapsed().as_secs_f64();
    assert!(n >= 10 + 15, "released {n} after 0.4 s at 50/s");
    assert!(
        (n as f64) <= 10.0 + 50.0 * (elapsed + 0.5),
        "released {n} too fast"
    );
    assert_eq!(manual_sim.released(), 10);

    // Releasing through the control endpoint.
    let resp = client()
        .post(format!("{}/_sim/release", manual_sim.url()))
        .body(r#"{"count":7}"#)
        .send()
        .await
        .expect("answered");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["released"], 17);
    assert_eq!(manual_sim.released(), 17);
    // Never beyond what was loaded.
    assert_eq!(manual_sim.release(10_000), 800);
    real.shutdown().await;
    manual_sim.shutdown().await;
}

#[tokio::test]
async fn shuffle_makes_ids_non_monotonic_reproducibly() {
    let file_ids: Vec<u64> = events(FILE)
        .iter()
        .map(|e| e["id"].as_str().expect("id").parse().expect("numeric id"))
        .collect();
    let drops = |v: &[u64]| v.windows(2).filter(|w| w[1] < w[0]).count();
    let order = |sim: &github_sim::Sim| -> Vec<u64> {
        sim.release_order()
            .iter()
            .map(|s| s.parse().expect("numeric"))
            .collect()
    };
    let shuffled = |seed| SimConfig {
        shuffle_block: 8,
        seed,
        ..manual(FILE, 300)
    };
    let plain = start(manual(FILE, 300)).await;
    assert_eq!(order(&plain), file_ids, "no shuffle keeps file order");
    plain.shutdown().await;

    let a = start(shuffled(7)).await;
    let b = start(shuffled(7)).await;
    let c = start(shuffled(8)).await;
    let (oa, ob, oc) = (order(&a), order(&b), order(&c));
    assert_eq!(oa, ob, "same seed, same order");
    assert_ne!(oa, oc, "another seed, another order");
    assert_ne!(oa, file_ids);
    for (block, orig) in oa.chunks(8).zip(file_ids.chunks(8)) {
        let (mut x, mut y) = (block.to_vec(), orig.to_vec());
        x.sort_unstable();
        y.sort_unstable();
        assert_eq!(x, y, "events only move within their block");
    }
    assert!(
        drops(&oa) > drops(&file_ids) + 50,
        "{} vs {}",
        drops(&oa),
        drops(&file_ids)
    );

    // And the page a client sees is not sorted by id.
    let page = ids(&get(&format!("{}/events?per_page=100", a.url()))
        .await
        .bytes()
        .await
        .expect("body"));
    let nums: Vec<u64> = page.iter().map(|s| s.parse().expect("numeric")).collect();
    assert!(
        nums.windows(2).any(|w| w[1] > w[0]),
        "newest-first page has rising ids"
    );
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}
