//! The client's address behind the deployment's trusted proxies: what the proxies forwarded for
//! is the source of the audit row, of `context.source_ip` and of the failed-authentication
//! budget; without trusted proxies (the default) a forwarding header is the client's own words
//! and changes nothing.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Db, Options, TestApp, assert_problem, spawn_app_with};

async fn with(vars: &[(&str, &str)]) -> TestApp {
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spawn_app_with(
        Db::Sqlite,
        Options {
            vars,
            ..Options::default()
        },
    )
    .await
}

/// `GET /users` with `key`, its `X-Forwarded-For` set to `forwarded`.
async fn users_via(app: &TestApp, key: &str, forwarded: &str) -> (StatusCode, Value) {
    let res = app
        .client
        .get(app.tenant_url("/users"))
        .bearer_auth(key)
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

/// A key that is no key, distinct per `n`.
fn bad_key(n: usize) -> String {
    format!("fgk_{n:016}wrongwrongwrongwrongwrongwrongwrongwrongwro")
}

/// The source address of the last `user.read` the audit trail holds.
async fn last_read_source(app: &TestApp) -> Value {
    let events = app.audit_events().await;
    let read = events.iter().rev().find(|e| e["action"] == "user.read");
    read.expect("a user.read event")["source_ip"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_is_whom_it_forwarded_for() {
    // The test talks from the loopback: it plays the load balancer.
    let app = with(&[
        ("FLOWGATE_TRUSTED_PROXIES", "127.0.0.0/8"),
        ("FLOWGATE_RATE_LIMIT_FAILURES", "3"),
    ])
    .await;
    let (reader, reader_id) = crate::authz::custom_key(&app, &["user.read"]).await;
    let outside = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{reader_id}", action, resource)
           when {{ context has source_ip && context.source_ip.isInRange(ip("203.0.113.0/24")) }};"#
    );
    crate::authz::policy(&app, "not-from-the-lab", &outside).await;

    let (status, body) = users_via(&app, &reader, "198.51.100.7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_read_source(&app).await, "198.51.100.7");
    let (status, body) = users_via(&app, &reader, "203.0.113.9").await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // A client that writes an address of its own in front is known by the one the proxy added.
    let (status, body) = users_via(&app, &reader, "10.9.9.9, 203.0.113.9").await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = users_via(&app, &reader, "203.0.113.9, 198.51.100.7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_read_source(&app).await, "198.51.100.7");

    // Failed authentications spend the forwarded client's budget, not the proxy's: three, and
    // the trip itself, are answered; the address is refused after.
    for n in 0..4 {
        let (status, body) = users_via(&app, &bad_key(n), "198.51.100.66").await;
        assert_problem(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let (status, body) = users_via(&app, &bad_key(4), "198.51.100.66").await;
    assert_problem(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let (status, body) = users_via(&app, &reader, "198.51.100.66").await;
    assert_problem(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Every other client behind the same proxy is served.
    let (status, body) = users_via(&app, &bad_key(5), "198.51.100.67").await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    let (status, body) = users_via(&app, &reader, "198.51.100.67").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_a_forwarded_address_is_the_client_s_own_words() {
    let app = with(&[("FLOWGATE_RATE_LIMIT_FAILURES", "3")]).await;
    let (reader, reader_id) = crate::authz::custom_key(&app, &["user.read"]).await;
    let office_only = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{reader_id}", action, resource)
           unless {{ context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) }};"#
    );
    crate::authz::policy(&app, "office-only", &office_only).await;
    // Claiming the office network does not put the client in it.
    let (status, body) = users_via(&app, &reader, "10.1.2.3").await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = users_via(&app, &app.admin_key, "10.1.2.3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_read_source(&app).await, "127.0.0.1");
    // A new address in every attempt does not make a new budget.
    for n in 0..4 {
        let (status, body) = users_via(&app, &bad_key(n), &format!("198.51.100.{n}")).await;
        assert_problem(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let (status, body) = users_via(&app, &bad_key(4), "198.51.100.4").await;
    assert_problem(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}
