//! `/users/{login}` and `/repos/{owner}/{repo}` synthesized from the events.

use std::collections::BTreeMap;

use github_sim::{PathKind, SimConfig};
use serde_json::Value;

use crate::common::*;

const FILE: &str = "2026-06-01-15-first-5000.json.gz";

#[tokio::test]
async fn users_come_from_actors_of_all_loaded_events() {
    let evs = events(FILE);
    // The last event is not released, its actor is still known.
    let last = &evs[evs.len() - 1]["actor"];
    let bot = evs
        .iter()
        .map(|e| &e["actor"])
        .find(|a| a["login"].as_str().is_some_and(|l| l.ends_with("[bot]")))
        .expect("the hour has a bot actor");
    let sim = start(manual(FILE, 10)).await;

    let resp = get(&format!(
        "{}/users/{}",
        sim.url(),
        last["login"].as_str().expect("login")
    ))
    .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "etag").starts_with('"'), "strong ETag");
    assert!(resp.headers().contains_key("last-modified"));
    let u: Value = resp.json().await.expect("json");
    assert_eq!(u["login"], last["login"]);
    assert_eq!(u["id"], last["id"]);
    assert_eq!(u["type"], "User");
    assert_eq!(u["email"], Value::Null);
    let id = last["id"].as_u64().expect("id");
    assert_eq!(
        u["avatar_url"],
        format!("https://avatars.githubusercontent.com/u/{id}?v=4")
    );
    assert_eq!(
        u["url"],
        format!(
            "https://api.github.com/users/{}",
            last["login"].as_str().expect("login")
        )
    );
    for field in ["node_id", "html_url", "created_at", "updated_at"] {
        assert!(u[field].is_string(), "{field}");
    }
    for field in ["public_repos", "followers", "following"] {
        assert!(u[field].is_u64(), "{field}");
    }
    for field in ["name", "company", "blog", "location", "bio"] {
        assert!(u.get(field).is_some(), "{field} present");
    }
    // Deterministic: asking again gives the same bytes.
    let a = get(&format!(
        "{}/users/{}",
        sim.url(),
        last["login"].as_str().expect("login")
    ))
    .await;
    let b = get(&format!(
        "{}/users/{}",
        sim.url(),
        last["login"].as_str().expect("login")
    ))
    .await;
    assert_eq!(a.bytes().await.expect("a"), b.bytes().await.expect("b"));

    let bot_login = bot["login"].as_str().expect("bot login");
    let resp = get(&format!(
        "{}/users/{}",
        sim.url(),
        bot_login.replace('[', "%5B").replace(']', "%5D")
    ))
    .await;
    assert_eq!(resp.status(), 200);
    let u: Value = resp.json().await.expect("json");
    assert_eq!(u["type"], "Bot");
    assert_eq!(u["login"], bot_login);
    assert_eq!(u["id"], bot["id"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn repos_come_from_repo_objects() {
    let evs = events(FILE);
    let ev = &evs[evs.len() / 2];
    let full = ev["repo"]["name"].as_str().expect("repo name");
    let sim = start(manual(FILE, 10)).await;
    let resp = get(&format!("{}/repos/{full}", sim.url())).await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.expect("json");
    assert_eq!(r["id"], ev["repo"]["id"]);
    assert_eq!(r["full_name"], full);
    assert_eq!(r["name"], full.split('/').nth(1).expect("name"));
    assert_eq!(r["owner"]["login"], full.split('/').next().expect("owner"));
    assert_eq!(r["private"], false);
    assert_eq!(r["html_url"], format!("https://github.com/{full}"));
    for field in [
        "node_id",
        "created_at",
        "updated_at",
        "pushed_at",
        "default_branch",
    ] {
        assert!(r[field].is_string(), "{field}");
    }
    for field in [
        "size",
        "stargazers_count",
        "watchers_count",
        "forks_count",
        "open_issues_count",
    ] {
        assert!(r[field].is_u64(), "{field}");
    }
    for field in ["fork", "archived", "disabled"] {
        assert!(r[field].is_boolean(), "{field}");
    }
    assert!(r["created_at"].as_str() <= r["pushed_at"].as_str());
    // Case-insensitive, as on GitHub.
    let upper = get(&format!("{}/repos/{}", sim.url(), full.to_uppercase())).await;
    assert_eq!(upper.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_and_gone_are_404_and_304_works() {
    let evs = events(FILE);
    let gone_login = evs[0]["actor"]["login"]
        .as_str()
        .expect("login")
        .to_string();
    let login = evs[1]["actor"]["login"]
        .as_str()
        .expect("login")
        .to_string();
    let repo = evs[1]["repo"]["name"].as_str().expect("repo").to_string();
    assert_ne!(login, gone_login);
    let sim = start(SimConfig {
        gone_users: vec![gone_login.clone()],
        ..manual(FILE, 10)
    })
    .await;
    let c = client();
    let not_found = r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest","status":"404"}"#;
    for path in [
        "/users/this-user-should-really-not-exist-42".to_string(),
        format!("/users/{gone_login}"),
        "/repos/nobody-xyz/nothing".to_string(),
    ] {
        let resp = c
            .get(format!("{}{path}", sim.url()))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 404, "{path}");
        assert!(header_num(&resp, "x-ratelimit-used") > 0, "404 is charged");
        assert_eq!(resp.text().await.expect("body"), not_found);
    }

    // 304 on a matching ETag (free by default), then gone via the control endpoint.
    let url = format!("{}/users/{login}", sim.url());
    let first = c.get(&url).send().await.expect("answered");
    let etag = header(&first, "etag");
    let remaining = header_num(&first, "x-ratelimit-remaining");
    let again = c
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), 304);
    assert_eq!(header_num(&again, "x-ratelimit-remaining"), remaining);
    let rurl = format!("{}/repos/{repo}", sim.url());
    let r1 = c.get(&rurl).send().await.expect("answered");
    let r2 = c
        .get(&rurl)
        .header("If-None-Match", header(&r1, "etag"))
        .send()
        .await
        .expect("answered");
    assert_eq!(r2.status(), 304);

    let ctl = c
        .post(format!("{}/_sim/gone", sim.url()))
        .body(format!(r#"{{"users":["{login}"],"repos":["{repo}"]}}"#))
        .send()
        .await
        .expect("control answered");
    assert_eq!(ctl.status(), 200);
    assert_eq!(c.get(&url).send().await.expect("answered").status(), 404);
    assert_eq!(c.get(&rurl).send().await.expect("answered").status(), 404);

    let stats = sim.stats();
    assert_eq!(stats.users.get(login.as_str()), Some(&3));
    assert_eq!(stats.users.get(gone_login.as_str()), Some(&1));
    assert_eq!(stats.repos.get(repo.as_str()), Some(&3));
    let me = stats.anonymous().expect("recorded");
    assert_eq!(me.count(PathKind::Users, 304), 1);
    assert_eq!(me.count(PathKind::Repos, 304), 1);
    assert_eq!(me.count(PathKind::Users, 404), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn per_login_counts_show_each_actor_requested_once() {
    let file = "2026-06-01-15-sample7.jsonl";
    let sim = start(manual(file, 7)).await;
    let c = client();
    let page: Vec<Value> = c
        .get(format!("{}/events", sim.url()))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    let mut want = BTreeMap::new();
    for e in &page {
        let login = e["actor"]["login"].as_str().expect("login").to_string();
        if want.insert(login.clone(), 1u64).is_none() {
            let resp = c
                .get(format!("{}/users/{login}", sim.url()))
                .send()
                .await
                .expect("answered");
            assert_eq!(resp.status(), 200, "{login}");
        }
    }
    assert_eq!(sim.stats().users, want);
    sim.shutdown().await;
}
