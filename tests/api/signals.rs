//! Signals and alerts (issue 14): scripted attacks raise security signals, the tenant's webhook
//! gets each one signed as Standard Webhooks (verified by the reference `standardwebhooks`
//! library in `tests/peers/webhooks/receiver.py`), and an attached automatic response takes
//! the attacker's access away — itself on record.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Db, Options, assert_problem, json_lines, python_peer, spawn_app_with};

/// The webhook receiver: verifies each delivery with the reference library.
struct Hook {
    _child: tokio::process::Child,
    secret_file: PathBuf,
    out: PathBuf,
    port: u16,
}

impl Hook {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("flowgate-hook-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (secret_file, out) = (dir.join("secret"), dir.join("deliveries.jsonl"));
        let (child, port) = python_peer(
            "webhooks/receiver.py",
            &[secret_file.as_os_str(), out.as_os_str()],
        )
        .await;
        Hook {
            _child: child,
            secret_file,
            out,
            port,
        }
    }

    fn deliveries(&self) -> Vec<Value> {
        json_lines(&self.out)
    }

    /// The verified `security.event` deliveries so far: their OCSF events.
    fn events(&self) -> Vec<Value> {
        self.deliveries()
            .into_iter()
            .filter(|d| d["verified"] == true && d["payload"]["type"] == "security.event")
            .map(|d| d["payload"]["data"].clone())
            .collect()
    }

    /// Waits for a verified delivery of `signal`.
    async fn signal(&self, signal: &str) -> Value {
        for _ in 0..100 {
            if let Some(found) = self
                .deliveries()
                .into_iter()
                .find(|d| d["verified"] == true && d["payload"]["data"]["signal"] == signal)
            {
                return found["payload"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no verified `{signal}` alert in {:?}", self.deliveries());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_attacks_raise_signed_alerts_and_the_attached_response_revokes_the_key() {
    let app = spawn_app_with(
        Db::Sqlite,
        Options {
            // The webhook receiver listens on the loopback.
            vars: vec![("FLOWGATE_IDP_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into())],
            ..Options::default()
        },
    )
    .await;
    let hook = Hook::start().await;
    let url = format!("http://127.0.0.1:{}/hook", hook.port);

    // Only who may manage settings may change what protects the tenant, and bad input loses
    // nothing.
    let viewer = app.key_with_role(Some("Viewer")).await;
    let (status, body) = app
        .call(Method::PUT, "/security/alerting", &viewer, Some(json!({})))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    for (bad, field) in [
        (
            json!({"webhook_url": "http://example.com/hook"}),
            "webhook_url",
        ),
        (
            json!({"webhook_url": "https://user:pw@example.com/hook"}),
            "webhook_url",
        ),
        (
            json!({"webhook_url": "http://10.1.2.3/hook"}),
            "webhook_url",
        ),
        (
            json!({"failed_logins": {"threshold": 0}}),
            "failed_logins.threshold",
        ),
        (
            json!({"request_rate": {"factor": 1}}),
            "request_rate.factor",
        ),
        (
            json!({"elevation": {"responses": ["end_sessions", "end_sessions"]}}),
            "elevation.responses",
        ),
        (
            json!({"audit_tamper": {"responses": ["deactivate_user"]}}),
            "audit_tamper.responses",
        ),
        // Anyone can make failed logins: they may not stop the whole tenant's API access.
        (
            json!({"failed_logins": {"responses": ["revoke_all_api_keys"]}}),
            "failed_logins.responses",
        ),
    ] {
        let (status, body) = app
            .call(
                Method::PUT,
                "/security/alerting",
                &app.admin_key,
                Some(bad.clone()),
            )
            .await;
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert!(body.to_string().contains(field), "{bad}: {body}");
    }
    let (status, body) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(json!({"secret_reads": {"responses": ["grant_admin"]}})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");

    let (status, set) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(json!({
                "webhook_url": url,
                "webhook_events": ["authentication", "secret_access"],
                "failed_logins": {"threshold": 5, "window_seconds": 60},
                "secret_reads": {"threshold": 3, "window_seconds": 60, "responses": ["revoke_api_keys"]},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let secret = set["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{set}");
    std::fs::write(&hook.secret_file, &secret).unwrap();
    let (_, read) = app.get("/security/alerting", &app.admin_key).await;
    assert_eq!(read["webhook_secret_set"], true);
    assert_eq!(read["alerting"]["failed_logins"]["threshold"], 5);
    assert!(
        !read.to_string().contains(&secret),
        "the secret is shown once"
    );
    assert_eq!(read["alerting"]["webhook_url"], url);
    // Who may only read the settings sees where alerts go, not the URL's path (often a token).
    let auditor = app.key_with_role(Some("Auditor")).await;
    let (status, seen) = app.get("/security/alerting", &auditor).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(
        seen["alerting"]["webhook_url"],
        format!("http://127.0.0.1:{}", hook.port)
    );
    assert_eq!(seen["alerting"]["secret_reads"]["threshold"], 3);

    // The receiver really verifies: a forged delivery is refused.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body(r#"{"type":"security.signal"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);

    // Attack 1: a burst of bad API keys from one address.
    for i in 0..5 {
        let (status, _) = app.get("/users", &format!("fgk_{i}bogus")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let alert = hook.signal("failed_logins").await;
    assert_eq!(alert["type"], "security.signal");
    assert_eq!(alert["data"]["tenant"], app.tenant.as_str());
    assert_eq!(alert["data"]["subject"]["type"], "source");
    assert_eq!(alert["data"]["count"], 5);
    // The tenant also asked for its authentication events: each failure, in OCSF's shape.
    let events = hook.events();
    assert!(
        events
            .iter()
            .filter(|e| e["class_uid"] == 3002 && e["status"] == "Failure")
            .count()
            >= 5,
        "{events:?}"
    );
    assert!(
        events.iter().all(|e| e["class_uid"] == 3002),
        "only the classes asked for"
    );

    // Attack 2: a stolen service-account key reads secrets in a burst; the tenant attached
    // "revoke its API keys" to that signal.
    let thief = app.key_with_role(Some("Admin")).await;
    let (status, body) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "erp-token", "value": "s3cr3t-value"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..3 {
        let (status, body) = app.get("/secrets/erp-token/value", &thief).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let alert = hook.signal("secret_reads").await;
    let reads = hook
        .events()
        .iter()
        .filter(|e| e["api"]["operation"] == "secret.read")
        .count();
    assert!(
        reads >= 3,
        "each secret read is a security event the tenant asked for"
    );
    assert_eq!(alert["data"]["subject"]["type"], "service_account");
    assert_eq!(
        alert["data"]["responses"],
        json!([{"response": "revoke_api_keys", "applied": true, "changed": 1}])
    );
    let mut refused = false;
    for _ in 0..50 {
        let (status, _) = app.get("/users", &thief).await;
        if status == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the stolen key no longer works");
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "other keys keep working");

    // Making that key's account an Admin was an elevation.
    let alert = hook.signal("elevation").await;
    assert!(
        alert["data"]["summary"].as_str().unwrap().contains("Admin"),
        "{alert}"
    );

    // Someone edits the trail behind Flowgate's back; the next verification raises the alarm.
    app.tenant_sql("UPDATE audit_events SET status = 299 WHERE seq = 2")
        .await;
    let (status, report) = app.get("/audit/verify", &app.admin_key).await;
    assert_eq!(
        (status, report["ok"].clone()),
        (StatusCode::OK, json!(false)),
        "{report}"
    );
    let alert = hook.signal("audit_tamper").await;
    assert_eq!(alert["data"]["subject"]["type"], "service_account");

    // Every signal and the response are on record, as Flowgate's own.
    let events = app.audit_events().await;
    let signals: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "security.signal")
        .collect();
    assert!(
        signals
            .iter()
            .any(|e| e["details"]["signal"] == "failed_logins")
            && signals
                .iter()
                .any(|e| e["details"]["signal"] == "secret_reads"),
        "{signals:?}"
    );
    assert!(signals.iter().all(|e| e["actor_type"] == "system"));
    let response = events
        .iter()
        .find(|e| e["action"] == "security.response")
        .expect("the response is audited");
    assert_eq!(response["details"]["response"], "revoke_api_keys");
    assert_eq!(response["actor_id"], "signals");
    // A rotated secret is new, and shown once again.
    let (status, rotated) = app
        .call(
            Method::PUT,
            "/security/alerting?rotate_webhook_secret=true",
            &app.admin_key,
            Some(read["alerting"].clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["webhook_secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    std::fs::write(&hook.secret_file, new_secret).unwrap();
    let (_, kept) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(read["alerting"].clone()),
        )
        .await;
    assert_eq!(kept["webhook_secret"], Value::Null, "{kept}");
    assert_eq!(kept["webhook_secret_set"], true);

    // The last resort: any elevation suspends the tenant's API access (every key and client).
    let mut drastic = read["alerting"].clone();
    drastic["elevation"] = json!({"responses": ["revoke_all_api_keys"]});
    let (status, body) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(drastic),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bystander = app.key_with_role(Some("Viewer")).await;
    // The grant of Admin is the elevation; nothing else is asked of the admin key after it.
    app.account_with_role(Some("Admin")).await;
    let mut suspended = false;
    for _ in 0..50 {
        let (admin, _) = app.get("/users", &app.admin_key).await;
        let (other, _) = app.get("/users", &bystander).await;
        if (admin, other) == (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED) {
            suspended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(suspended, "no API key of the tenant works any more");
    // The alert, signed with the rotated secret, says what the response did: it revoked at
    // least the admin's key and the bystander's.
    let mut response = Value::Null;
    for _ in 0..50 {
        if let Some(found) = hook
            .deliveries()
            .into_iter()
            .filter(|d| d["verified"] == true)
            .find_map(|d| {
                let responses = d["payload"]["data"]["responses"].as_array()?.clone();
                responses
                    .into_iter()
                    .find(|r| r["response"] == "revoke_all_api_keys")
            })
        {
            response = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(response["applied"], true, "{response}");
    assert!(response["changed"].as_u64().unwrap() >= 2, "{response}");

    // The secret value read is in no alert or event that left.
    let sent = std::fs::read_to_string(&hook.out).unwrap();
    assert!(sent.contains("secret.read"), "the reads were sent");
    assert!(
        !sent.contains("s3cr3t-value"),
        "a secret value left in an alert"
    );
}
