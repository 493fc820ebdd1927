//! Rate limits: failed authentications spend a source address's budget, after which it is
//! refused before any lookup, with one audit row for the trip rather than one per attempt; a
//! principal over its rate is refused without slowing the others.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};

use crate::helpers::{Db, Options, TestApp, spawn_app_with};

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
