//! Signals and alerts (issue 14): scripted attacks raise security signals, the tenant's webhook
//! gets each one signed as Standard Webhooks (verified by the reference `standardwebhooks`
//! library in `tests/peers/webhooks/receiver.py`), and an attached automatic response takes
//! the attacker's access away — itself on record.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowgate::signals::SharedCounts;
use flowgate::signals::config::AlertingConfig;
use flowgate::signals::detect::{
    self, Detectors, Elevation, MAX_KEYS, Observation, SignalKind, Subject, Tally,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Db, Options, Redis, assert_problem, json_lines, python_peer, replicas_with_redis,
    spawn_app_with,
};

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
    // A key may not rotate the secret (the receiver would refuse every alert signed with the
    // new one): `only_a_person_rotates_the_webhook_secret` has a person do it.
    let (status, refused) = app
        .call(
            Method::PUT,
            "/security/alerting?rotate_webhook_secret=true",
            &app.admin_key,
            Some(read["alerting"].clone()),
        )
        .await;
    assert_problem(status, &refused, StatusCode::FORBIDDEN, "forbidden");
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
    // The alert, still signed with the first secret, says what the response did: it revoked at
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

/// A service account holding `settings.manage` in a tenant that reserves that action for people
/// may neither change the alerting settings nor see the webhook URL whole: what a view shows
/// follows what `authorize` would allow, the human-only screen included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_people_only_settings_manage_hides_the_webhook_url_from_service_accounts() {
    let app = spawn_app_with(Db::Sqlite, Options::default()).await;
    let url = "https://siem.example.com/hooks/t0ken-in-the-path";
    let alerting = json!({"webhook_url": url});
    let (status, body) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(alerting.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, read) = app.get("/security/alerting", &app.admin_key).await;
    assert_eq!(read["alerting"]["webhook_url"], url);

    let reserve = json!({"human_only_actions": ["settings.manage"], "step_up_minutes": 0});
    let (status, body) = app
        .call(Method::PATCH, "/settings", &app.admin_key, Some(reserve))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, seen) = app.get("/security/alerting", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(
        seen["alerting"]["webhook_url"], "https://siem.example.com",
        "{seen}"
    );
    assert!(!seen.to_string().contains("t0ken"), "{seen}");
    let (status, body) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(alerting),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

/// A new signing secret makes the receiver refuse every alert until it is given it: a key (a
/// leaked one, say) may not rotate it, nor loosen what is watched; a person signed in through
/// the tenant's provider may do both, and each loosening raises `alerting_loosened`, of which
/// the receiver that was watching hears, signed with the secret it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_person_rotates_the_webhook_secret() {
    let app = spawn_app_with(
        Db::Sqlite,
        Options {
            vars: vec![("FLOWGATE_IDP_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into())],
            ..Options::default()
        },
    )
    .await;
    let hook = Hook::start().await;
    let alerting = json!({"webhook_url": format!("http://127.0.0.1:{}/hook", hook.port)});
    let stored = || app.tenant_rows("SELECT value FROM tenant_settings WHERE key = 'alerting'");
    let rotate = "/security/alerting?rotate_webhook_secret=true";
    let (status, first) = app
        .call(Method::PUT, rotate, &app.admin_key, Some(alerting.clone()))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a first secret is no rotation: {first}"
    );
    let secret = first["webhook_secret"].as_str().unwrap().to_owned();
    std::fs::write(&hook.secret_file, &secret).unwrap();
    let before = stored().await;

    let (status, body) = app
        .call(Method::PUT, rotate, &app.admin_key, Some(alerting.clone()))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("`webhook_secret`"),
        "{body}"
    );
    assert_eq!(stored().await, before, "the secret that works is kept");

    // People of group `finance`, signing in through the provider, are Admins.
    app.post("/groups", &app.admin_key, json!({"name": "finance"}))
        .await;
    crate::signin::bind_group(&app, "finance", "Admin").await;
    let (idp, _peer) = crate::signin::provider(
        &app,
        "generic",
        &[(crate::signin::ADA, crate::signin::ada_claims())],
        json!({}),
    )
    .await;
    let (status, body) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"step_up_minutes": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ada = crate::oidc_peer::Browser::new(&app);
    ada.sign_in_ok(&app, &idp, crate::signin::ADA).await;
    let (status, rotated, _) =
        crate::mfa::call(&app, &ada, Method::PUT, rotate, Some(alerting.clone())).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["webhook_secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert_ne!(stored().await, before);
    // The receiver, which has only the old secret, verifies the alert of its own rotation.
    let told = hook.signal("alerting_loosened").await;
    assert_eq!(told["data"]["subject"]["type"], "user", "{told}");
    assert!(
        told["data"]["summary"]
            .as_str()
            .unwrap()
            .contains("`webhook_secret`"),
        "{told}"
    );
    let mut quieter = alerting.clone();
    quieter["request_rate"] = json!({"enabled": false});
    let (status, body, _) =
        crate::mfa::call(&app, &ada, Method::PUT, "/security/alerting", Some(quieter)).await;
    assert_eq!(status, StatusCode::OK, "a person may watch less: {body}");
    assert_eq!(body["alerting"]["request_rate"]["enabled"], false);
    let refusals: Vec<Value> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == "settings.manage" && e["status"] == 403)
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "the key's attempt is on record: {refusals:?}"
    );
    // What a person may do, the others hear of: each loosening raises `alerting_loosened`
    // about that person (the rotation, and the detector switched off).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let loosened: Vec<Value> = app
            .audit_events()
            .await
            .into_iter()
            .filter(|e| {
                e["action"] == "security.signal" && e["details"]["signal"] == "alerting_loosened"
            })
            .collect();
        let fields: Vec<&str> = loosened
            .iter()
            .map(|e| e["details"]["summary"].as_str().unwrap())
            .collect();
        if fields.iter().any(|s| s.contains("`webhook_secret`"))
            && fields.iter().any(|s| s.contains("`request_rate`"))
        {
            assert!(
                loosened
                    .iter()
                    .all(|e| e["details"]["subject"]["type"] == "user"),
                "{loosened:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "missing loosenings: {fields:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replicas sharing Redis count together: failed sign-ins spread over two replicas, fewer at
/// each than the tenant's threshold, fire one signal when they reach it together — not one per
/// replica, and not none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_count_failed_logins_together() {
    let redis = Redis::start().await;
    let (app, (replica, _server, _state)) = replicas_with_redis(&redis, 1000).await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(json!({"failed_logins": {"threshold": 6, "window_seconds": 60}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let bad_key_at = async |base: &str, i: usize| {
        let answer = client
            .get(format!("{base}/t/{}/api/v1/users", app.tenant))
            .bearer_auth(format!("fgk_{i}spread"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    };
    // Two rounds of six: the first reaches the threshold, the second is inside its window.
    for i in 0..12 {
        let base = if i % 2 == 0 { &app.base } else { &replica };
        bad_key_at(base, i).await;
    }
    let fired = |events: &[Value]| {
        events
            .iter()
            .filter(|e| {
                e["action"] == "security.signal" && e["details"]["signal"] == "failed_logins"
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    for _ in 0..50 {
        if !fired(&app.audit_events().await).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a second replica's signal, were it to raise one too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = fired(&app.audit_events().await);
    assert_eq!(all.len(), 1, "one signal for both replicas: {all:?}");
    assert_eq!(all[0]["details"]["subject"]["type"], "source");
    assert_eq!(all[0]["details"]["count"], 6, "{}", all[0]);
}

fn observed(action: &str, status: i32, actor: &str, ip: &str) -> Observation {
    Observation {
        action: action.into(),
        status,
        actor_type: if actor.is_empty() {
            "anonymous".into()
        } else {
            "service_account".into()
        },
        actor_id: actor.into(),
        source_ip: Some(ip.into()),
        credential: None,
        elevation: None,
        tamper: false,
        loosened: None,
    }
}

/// The counts kept in Redis are the in-process detectors' own: the same events, counted both
/// ways, fire the same signals (windows per source and per principal, first and new networks,
/// events that fire alone), and a principal's rate fires once per minute against the baseline
/// Redis keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_in_redis_fire_what_the_in_process_detectors_fire() {
    let redis = Redis::start().await;
    let shared = SharedCounts::new(&redis.url.clone().into()).unwrap();
    let mut config = AlertingConfig::default();
    config.failed_logins.threshold = 3;
    config.secret_reads.threshold = 2;
    // Long windows: Redis's periods start on its clock, the detectors' at their first event, so
    // a period boundary inside the test would tell them apart.
    config.failed_logins.window_seconds = 86_400;
    config.secret_reads.window_seconds = 86_400;
    let mut local = Detectors::default();
    let mut grant = observed("role_binding.create", 201, "sa2", "10.0.0.1");
    grant.elevation = Some(Elevation::EverythingGranted);
    let events = [
        observed("auth.authenticate", 401, "", "10.0.0.9"),
        observed("auth.authenticate", 401, "", "10.0.0.9"),
        observed("secret.read", 200, "sa1", "10.0.0.1"),
        observed("auth.authenticate", 401, "", "10.0.0.9"),
        observed("auth.authenticate", 401, "", "10.0.0.9"),
        observed("secret.read", 403, "sa1", "10.0.0.1"),
        observed("secret.read", 200, "sa1", "10.0.0.1"),
        observed("user.read", 200, "sa1", "192.0.2.7"),
        observed("user.read", 200, "sa1", "192.0.2.8"),
        observed("user.read", 200, "sa1", "198.51.100.1"),
        grant,
    ];
    let mut fired = Vec::new();
    for event in &events {
        let tallies = detect::tallies(&config, event);
        let here = local.fire(tallies.clone(), Instant::now());
        let counts = shared.count("acme", &tallies).await;
        assert_eq!(counts.len(), tallies.len(), "Redis counted every tally");
        let there: Vec<_> = tallies
            .into_iter()
            .zip(counts)
            .filter_map(|(tally, count)| Some(tally.signal(count?)))
            .collect();
        assert_eq!(here, there, "{event:?}");
        fired.extend(there.into_iter().map(|s| s.kind));
    }
    assert_eq!(
        fired,
        [
            SignalKind::FailedLogins,
            SignalKind::SecretReads,
            SignalKind::NewNetwork,
            SignalKind::NewNetwork,
            SignalKind::Elevation
        ],
        "the same events would fire these whichever way they are counted"
    );

    // A flood of new source addresses takes at most the detectors' number of places in Redis
    // per period: the ones beyond it are not counted (and make no keys).
    let flood: Vec<Tally> = (0..MAX_KEYS + 100)
        .map(|i| Tally::Window {
            kind: SignalKind::FailedLogins,
            subject: Subject::Source(format!("2001:db8::{i:x}")),
            window: Duration::from_secs(86_400),
            threshold: 1,
        })
        .collect();
    let counts = shared.count("flood", &flood).await;
    assert_eq!(counts.len(), flood.len(), "Redis counted every tally");
    assert_eq!(counts.iter().filter(|c| c.is_some()).count(), MAX_KEYS);
    assert!(counts[MAX_KEYS..].iter().all(Option::is_none));

    // A rate: a principal whose earlier minutes averaged 4 requests (ten times that is under
    // the minimum of 50, which decides), then a burst.
    config.request_rate.factor = 10;
    config.request_rate.minimum = 50;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let (seconds, _): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut connection)
        .await
        .unwrap();
    let () = redis::cmd("HSET")
        .arg("flowgate:sig:{acme}:request_rate:service_account:sa3")
        .arg(&[
            ("started", (seconds - 61) * 1000),
            ("count", 4),
            ("baseline", 4),
            ("seen", 3),
        ])
        .query_async(&mut connection)
        .await
        .unwrap();
    let rate = detect::tallies(&config, &observed("user.read", 200, "sa3", "10.0.0.1"))
        .into_iter()
        .find(|t| matches!(t, Tally::Rate { .. }))
        .unwrap();
    let burst = vec![rate; 70];
    let counts = shared.count("acme", &burst).await;
    let fired: Vec<_> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_some())
        .collect();
    assert_eq!(
        fired,
        [(49, &Some(50))],
        "the 50th request of the minute, once"
    );
}

/// `settings.manage` alone aims no automatic response: attaching one, or retuning a detector
/// that has one, needs what the response does throughout the tenant (a tuner could otherwise
/// deactivate an Admin by setting the request-rate detector to fire on them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiming_an_automatic_response_needs_what_it_does() {
    let app = spawn_app_with(Db::Sqlite, Options::default()).await;
    let (tuner, _) = crate::authz::custom_key(&app, &["settings.read", "settings.manage"]).await;
    let put = |key: &str, body: Value| {
        let key = key.to_owned();
        let app = &app;
        async move {
            app.call(Method::PUT, "/security/alerting", &key, Some(body))
                .await
        }
    };
    let armed =
        json!({"request_rate": {"factor": 5, "minimum": 100, "responses": ["deactivate_user"]}});

    let (status, body) = put(&tuner, armed.clone()).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("user.disable"),
        "{body}"
    );
    let (_, read) = app.get("/security/alerting", &app.admin_key).await;
    assert_eq!(
        read["alerting"]["request_rate"]["responses"],
        json!([]),
        "nothing stored"
    );
    let (status, body) = put(
        &tuner,
        json!({"request_rate": {"factor": 5, "minimum": 100}}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "thresholds without responses: {body}"
    );

    let (status, body) = put(&app.admin_key, armed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut with_events = armed.clone();
    with_events["webhook_events"] = json!(["authentication"]);
    let (status, body) = put(&tuner, with_events.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the armed detector left as it is: {body}"
    );
    let (status, body) = put(
        &tuner,
        json!({"request_rate": {"factor": 2, "minimum": 10, "responses": ["deactivate_user"]}}),
    )
    .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

    let (revoker, _) = crate::authz::custom_key(
        &app,
        &["settings.read", "settings.manage", "api_key.revoke"],
    )
    .await;
    let mut stricter = with_events.clone();
    stricter["secret_reads"] =
        json!({"threshold": 2, "window_seconds": 60, "responses": ["revoke_api_keys"]});
    let (status, body) = put(&revoker, stricter.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "who may revoke keys by hand may aim it: {body}"
    );

    // Watching less is a person's decision: a key (a leaked one, say) cannot blind the
    // detectors that watch keys, whatever it holds.
    let mut looser = Vec::new();
    for (field, value) in [
        (
            "secret_reads",
            json!({"threshold": 50, "window_seconds": 60, "responses": ["revoke_api_keys"]}),
        ),
        (
            "secret_reads",
            json!({"threshold": 2, "window_seconds": 10, "responses": ["revoke_api_keys"]}),
        ),
        (
            "secret_reads",
            json!({"threshold": 2, "window_seconds": 60}),
        ),
        (
            "request_rate",
            json!({"enabled": false, "factor": 5, "minimum": 100}),
        ),
        ("webhook_events", json!([])),
        ("new_network", json!({"enabled": false})),
    ] {
        let mut body = stricter.clone();
        body[field] = value;
        looser.push((field, body));
    }
    for (field, body) in looser {
        for key in [&revoker, &app.admin_key] {
            let (status, refused) = put(key, body.clone()).await;
            assert_problem(status, &refused, StatusCode::FORBIDDEN, "forbidden");
            assert!(
                refused["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{field}`")),
                "{refused}"
            );
        }
    }
    let (_, read) = app.get("/security/alerting", &app.admin_key).await;
    assert_eq!(
        read["alerting"]["secret_reads"]["threshold"], 2,
        "nothing loosened: {read}"
    );
    let (status, body) = put(&revoker, stricter).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same again watches as much: {body}"
    );
}

/// An elevation is judged by what a change gives, never by a role's name: binding a custom
/// role as wide as Admin, giving a role more actions and deleting a forbid each raise it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elevations_are_judged_by_what_they_give() {
    let app = spawn_app_with(Db::Sqlite, Options::default()).await;
    let (_, roles) = app.get("/roles", &app.admin_key).await;
    let everything = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Admin")
        .unwrap()["actions"]
        .clone();
    crate::authz::create_role(&app, "Keys to everything", &["user.read"]).await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/roles/Keys%20to%20everything",
            &app.admin_key,
            Some(json!({"actions": everything})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.account_with_role(Some("Keys to everything")).await;
    let (status, forbid) = app
        .post("/policies", &app.admin_key, json!({"name": "no-reads", "text": r#"forbid(principal in Flowgate::Group::"00000000-0000-0000-0000-000000000001", action == Flowgate::Action::"user.read", resource);"#}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{forbid}");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/policies/{}", forbid["id"].as_str().unwrap()),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let wanted = [
        "a role given more actions (role.manage)",
        "a grant of every action (the Admin role or one as wide) (role_binding.create)",
        "a forbid changed or deleted (policy.manage)",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let summaries: Vec<String> = app
            .audit_events()
            .await
            .iter()
            .filter(|e| e["action"] == "security.signal" && e["details"]["signal"] == "elevation")
            .map(|e| e["details"]["summary"].as_str().unwrap().to_owned())
            .collect();
        if wanted.iter().all(|w| summaries.iter().any(|s| s == w)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing elevations among {summaries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
