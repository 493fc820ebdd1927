//! Rate limits: failed authentications spend a source address's budget, after which it is
//! refused before any lookup, with one audit row for the trip rather than one per attempt; a
//! principal over its rate is refused without slowing the others; operators set a tenant's own
//! rates; replicas sharing Redis share one budget.

use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde_json::{Value, json};

use crate::helpers::{Db, Options, Redis, TestApp, replicas_with_redis, spawn_app_with};

async fn with(vars: &[(&str, &str)]) -> TestApp {
    spawn_app_with(
        Db::Sqlite,
        Options {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Options::default()
        },
    )
    .await
}

async fn events(app: &TestApp, action: &str) -> u64 {
    let conn = app.tenant_connection().await;
    entity::tenant::audit_event::Entity::find()
        .filter(entity::tenant::audit_event::Column::Action.eq(action))
        .count(&conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_failures_block_the_address_and_are_audited_once() {
    let app = with(&[("FLOWGATE_RATE_LIMIT_FAILURES", "5")]).await;
    let bad = |n: usize| {
        let app = &app;
        async move {
            app.client
                .get(app.tenant_url("/users"))
                .bearer_auth(format!(
                    "fgk_{n:016}wrongwrongwrongwrongwrongwrongwrongwrongwro"
                ))
                .send()
                .await
                .unwrap()
        }
    };
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(bad(n).await.status());
    }
    assert_eq!(
        statuses,
        vec![StatusCode::UNAUTHORIZED; 6],
        "within the budget, and the trip itself"
    );
    for n in 6..40 {
        let refused = bad(n).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(
            refused.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .starts_with("\"failures\";q=5;w=60")
        );
        assert!(refused.headers().contains_key("ratelimit"));
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "rate_limited");
    }
    // Even a good key is refused from that address until the budget refills: nothing is looked up.
    let good = app
        .client
        .get(app.tenant_url("/users"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), StatusCode::TOO_MANY_REQUESTS);
    // 40 attempts, 6 rows: the failures within the budget and the trip's own failure.
    assert_eq!(events(&app, "auth.authenticate").await, 6);
    assert_eq!(events(&app, "rate_limit.trip").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_is_refused_and_its_tenant_still_serves_others() {
    let app = with(&[("FLOWGATE_RATE_LIMIT_PRINCIPAL", "3")]).await;
    let (other, _) = crate::authz::custom_key(&app, &["user.read"]).await;
    let mut refused = 0;
    for _ in 0..20 {
        let (status, _) = app.get("/users", &app.admin_key).await;
        match status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert!(refused > 0, "the burst of 6 is spent");
    let (status, body) = app.get("/users", &other).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another principal is not slowed: {body}"
    );
    assert_eq!(
        events(&app, "rate_limit.trip").await,
        1,
        "one trip, not one row per refusal"
    );
}

/// `PUT /api/v1/platform/tenants/{slug}/rate-limits` as the operator (or with `token`).
async fn set_limits(app: &TestApp, slug: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .put(app.url(&format!("/api/v1/platform/tenants/{slug}/rate-limits")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Statuses of `n` reads of the user list with `key`, at `base` (a replica) or the app.
async fn reads(app: &TestApp, base: Option<&str>, key: &str, n: usize) -> Vec<StatusCode> {
    let url = match base {
        Some(base) => format!("{base}/t/{}/api/v1/users", app.tenant),
        None => app.tenant_url("/users"),
    };
    let mut statuses = Vec::new();
    for _ in 0..n {
        let response = app.client.get(&url).bearer_auth(key).send().await.unwrap();
        statuses.push(response.status());
    }
    statuses
}

fn refused(statuses: &[StatusCode]) -> usize {
    statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sets_a_tenant_s_own_limits_and_only_that_tenant_is_held_to_them() {
    let app = with(&[]).await;
    let other_tenant = crate::helpers::unique_slug("other");
    let other_key = app.create_tenant(&other_tenant).await;
    let token = app.operator_token.clone();

    for (body, field) in [
        (json!({"tenant_per_second": 0}), "tenant_per_second"),
        (
            json!({"principal_per_second": 2_000_000}),
            "principal_per_second",
        ),
        (json!({"principal_per_second": -1}), ""),
        (json!({"tenant_per_second": 5, "burst": 9}), ""),
    ] {
        let (status, problem) = set_limits(&app, &app.tenant, &token, body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status} {problem}");
        assert!(
            field.is_empty() || problem.to_string().contains(field),
            "{body}: {problem}"
        );
    }
    assert_eq!(
        set_limits(&app, "no-such-tenant", &token, json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        set_limits(
            &app,
            &app.tenant,
            &app.admin_key,
            json!({"tenant_per_second": 1000})
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED,
        "a tenant admin cannot raise its own limits"
    );
    assert!(
        refused(&reads(&app, None, &app.admin_key, 12).await) == 0,
        "nothing refused at the server's rates"
    );

    let (status, view) =
        set_limits(&app, &app.tenant, &token, json!({"tenant_per_second": 1})).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(
        view["rate_limits"],
        json!({"principal_per_second": null, "tenant_per_second": 1})
    );
    assert_eq!(
        reads(&app, None, &app.admin_key, 1).await,
        vec![StatusCode::OK]
    );
    let statuses = reads(&app, None, &app.admin_key, 6).await;
    assert!(
        refused(&statuses) >= 4,
        "a burst of 2, then refused: {statuses:?}"
    );
    let refusal = app
        .client
        .get(app.tenant_url("/users"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal.headers()["ratelimit-policy"].to_str().unwrap(),
        "\"tenant\";q=1;w=1"
    );
    let other = app
        .client
        .get(app.url(&format!("/t/{other_tenant}/api/v1/users")))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another tenant is not held to them"
    );

    let (status, view) = set_limits(&app, &app.tenant, &token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["rate_limits"],
        json!({"principal_per_second": null, "tenant_per_second": null})
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        refused(&reads(&app, None, &app.admin_key, 12).await),
        0,
        "back to the server's rates"
    );
    let changes: Vec<Value> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == "tenant.limit")
        .collect();
    assert_eq!(changes.len(), 2, "each change is on the tenant's record");
    assert!(changes.iter().all(|e| e["actor_type"] == "operator"));
    assert!(
        changes
            .iter()
            .any(|e| e["details"]["tenant_per_second"] == 1),
        "with the rates set: {changes:?}"
    );
}

/// Two replicas behind one Redis allow the configured rate together: a principal that spent
/// its burst at one replica is refused at the other, whose own bucket is still full; an address
/// that spent its failures at one is blocked at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_share_one_budget() {
    let redis = Redis::start().await;
    let (app, (replica, _server, _state)) = replicas_with_redis(&redis, 3).await;
    let (key, _) = crate::authz::custom_key(&app, &["user.read"]).await;
    let token = app.operator_token.clone();
    let (status, _) = set_limits(
        &app,
        &app.tenant,
        &token,
        json!({"principal_per_second": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(
        reads(&app, None, &key, 2).await,
        vec![StatusCode::OK; 2],
        "the burst of 2"
    );
    assert_eq!(
        reads(&app, Some(&replica), &key, 1).await,
        vec![StatusCode::TOO_MANY_REQUESTS],
        "the other replica knows the burst is spent"
    );

    let bad = "fgk_0000000000000000wrongwrongwrongwrongwrongwrongwrongwrongwro";
    assert_eq!(
        reads(&app, None, bad, 3).await,
        vec![StatusCode::UNAUTHORIZED; 3],
        "the budget of 3 failures, spent at the first replica"
    );
    assert_eq!(
        reads(&app, Some(&replica), bad, 2).await,
        vec![StatusCode::TOO_MANY_REQUESTS; 2],
        "the other replica refuses the address before looking its credential up"
    );
    assert_eq!(
        reads(&app, None, &app.admin_key, 1).await,
        vec![StatusCode::TOO_MANY_REQUESTS],
        "and the first replica no longer looks up that address's credentials"
    );
}

/// Redis is an addition, not a dependency: a replica whose Redis goes away keeps serving at its
/// own limits, without waiting long on each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_redis_goes_away_keeps_serving() {
    let mut redis = Redis::start().await;
    let app = with(&[("FLOWGATE_REDIS_URL", &redis.url)]).await;
    assert_eq!(
        reads(&app, None, &app.admin_key, 3).await,
        vec![StatusCode::OK; 3]
    );
    redis.stop();
    let started = std::time::Instant::now();
    assert_eq!(
        reads(&app, None, &app.admin_key, 5).await,
        vec![StatusCode::OK; 5],
        "served at this replica's own limits"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "each request waits on Redis for a bounded time"
    );
    let bad = "fgk_0000000000000000wrongwrongwrongwrongwrongwrongwrongwrongwro";
    assert_eq!(
        reads(&app, None, bad, 2).await,
        vec![StatusCode::UNAUTHORIZED; 2],
        "failures are still counted"
    );
}

/// A page elsewhere can make its visitors' browsers send requests here (images, links, forms),
/// without their credentials: those refusals must not spend the failure budget of the visitors'
/// network, or any web page could lock an office behind one address out. What a caller presents
/// itself (a bearer key) spends it whatever headers come with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_elsewhere_cannot_spend_its_visitors_failure_budget() {
    let app = with(&[("FLOWGATE_RATE_LIMIT_FAILURES", "3")]).await;
    let callback = app.url(&format!(
        "/t/{}/auth/oidc/{}/callback?state=guess&code=x",
        app.tenant,
        uuid::Uuid::new_v4()
    ));
    let token = app.url(&format!("/t/{}/auth/token", app.tenant));
    let form = "grant_type=client_credentials&client_id=fgc_AbCdEfGhIjKlMnOp&client_secret=x";
    for _ in 0..8 {
        // An <img> of the API, of the platform API: no credential at all.
        let api = app
            .client
            .get(app.tenant_url("/users"))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
        let platform = app
            .client
            .get(app.url("/api/v1/platform/tenants"))
            .send()
            .await
            .unwrap();
        assert_eq!(platform.status(), StatusCode::UNAUTHORIZED);
        // A link to a sign-in callback with a made-up login.
        let signin = app
            .client
            .get(&callback)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_ne!(signin.status(), StatusCode::TOO_MANY_REQUESTS);
        // A form posting a guessed client secret: refused before any lookup.
        for (name, value) in [
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let res = app
                .client
                .post(&token)
                .header(name, value)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST);
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request", "{body}");
        }
    }
    let (status, body) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "the network is not blocked: {body}");
    // Nor is the trail a write amplifier for them: refusals that spend no budget are recorded
    // only up to the budget's number a minute per address.
    let missing = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| {
            e["action"] == "auth.authenticate" && e["details"]["reason"] == "missing_credentials"
        })
        .count();
    assert!((1..=3).contains(&missing), "{missing} recorded of 8");

    // A bearer key is the caller's own: it spends, whatever the request says of its origin.
    let mut statuses = Vec::new();
    for n in 0..5 {
        let res = app
            .client
            .get(app.tenant_url("/users"))
            .bearer_auth(format!(
                "fgk_{n:016}wrongwrongwrongwrongwrongwrongwrongwrongwro"
            ))
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
    }
    assert_eq!(statuses[..4], [StatusCode::UNAUTHORIZED; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}
