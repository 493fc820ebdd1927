//! OpenTelemetry export (issue 14), end to end: a server started with `FLOWGATE_OTLP_ENDPOINT`
//! sends its spans, metrics and audit events to a real OTLP/HTTP receiver
//! (`tests/peers/otlp/receiver.py`, which decodes them with the protocol's own protobuf classes);
//! a planted secret value and API key are in none of them; a collector that is down costs no
//! request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{json_lines, python_peer};

const OPERATOR_TOKEN: &str = "telemetry-test-operator-token-0123456789";

/// The OTLP receiver, writing what it gets under `dir`.
struct Receiver {
    child: tokio::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Receiver {
    /// A receiver on a free port.
    async fn start(dir: &Path) -> Self {
        Self::start_on(dir, 0).await
    }

    /// A receiver on `port` (0: a free one).
    async fn start_on(dir: &Path, port: u16) -> Self {
        let port = port.to_string();
        let (child, port) =
            python_peer("otlp/receiver.py", &[dir.as_os_str(), port.as_ref()]).await;
        Receiver {
            child,
            dir: dir.to_owned(),
            port,
        }
    }

    /// The export requests of `signal` (`traces`, `metrics`, `logs`) received so far.
    fn requests(&self, signal: &str) -> Vec<Value> {
        json_lines(&self.dir.join(format!("{signal}.jsonl")))
    }

    /// Every byte received, of every signal, as sent.
    fn wire(&self) -> Vec<u8> {
        ["traces", "metrics", "logs"]
            .iter()
            .flat_map(|s| std::fs::read(self.dir.join(format!("{s}.bin"))).unwrap_or_default())
            .collect()
    }
}

/// A `flowgate serve` process of the test's own, on SQLite in `dir`.
struct Served {
    child: tokio::process::Child,
    base: String,
    client: reqwest::Client,
    log: PathBuf,
}

impl Served {
    async fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("server.log");
        let output = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FLOWGATE_DATA_DIR", dir.join("data"))
            .env("FLOWGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("FLOWGATE_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let cert = dir.join("data/tls/cert.pem");
        let base = format!("https://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(pem) = std::fs::read(&cert) {
                let client = reqwest::Client::builder()
                    .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
                    .pool_max_idle_per_host(0)
                    .http1_only()
                    .build()
                    .unwrap();
                if client.get(format!("{base}/healthz")).send().await.is_ok() {
                    return Served {
                        child,
                        base,
                        client,
                        log,
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// A tenant `acme` and its admin API key.
    async fn onboard(&self) -> String {
        let (_, created) = answer(
            self.client
                .post(format!("{}/api/v1/platform/tenants", self.base))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&json!({"slug": "acme"})),
        )
        .await;
        created["admin_api_key"].as_str().unwrap().to_owned()
    }

    fn api(&self, path: &str) -> String {
        format!("{}/t/acme/api/v1{path}", self.base)
    }

    /// Stops the server gracefully (which flushes its exporters) and waits for it.
    async fn stop(mut self) {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().unwrap().to_string())
            .status()
            .unwrap();
        let exited = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the server stops")
            .unwrap();
        assert!(
            exited.success(),
            "{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// Sends `request`: the status and the JSON body (`null` when it has none).
async fn answer(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowgate-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// OTLP attributes (`[{key, value: {stringValue | intValue | …}}]`) as a map of JSON values.
fn attributes(list: &Value) -> HashMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let value = kv["value"]
                .as_object()
                .and_then(|v| v.values().next().cloned());
            (
                kv["key"].as_str().unwrap().to_owned(),
                value.unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Every item at `path` (e.g. `resourceSpans/*/scopeSpans/*/spans`) of every request, with the
/// attributes of the resource it came from.
fn items(requests: &[Value], outer: &str, inner: &str, leaf: &str) -> Vec<(Value, Value)> {
    let mut found = Vec::new();
    for request in requests {
        for resource in request["request"][outer].as_array().into_iter().flatten() {
            for scope in resource[inner].as_array().into_iter().flatten() {
                for item in scope[leaf].as_array().into_iter().flatten() {
                    found.push((resource["resource"].clone(), item.clone()));
                }
            }
        }
    }
    found
}

/// The base64 of a hex id: protobuf's JSON mapping writes `bytes` fields (trace and span ids)
/// in base64.
fn id_b64(hex_id: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_id).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_spans_metrics_and_every_audit_event_in_their_collector() {
    let dir = temp_dir("otlp");
    let receiver = Receiver::start(&dir.join("received")).await;
    let server = Served::start(
        &dir,
        &[
            (
                "FLOWGATE_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{}", receiver.port),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test".into(),
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-collector-tenant=ops".into(),
            ),
            // The identity provider of the outbound call is the receiver, on the loopback.
            ("FLOWGATE_IDP_PRIVATE_NETWORKS", "127.0.0.0/8".into()),
        ],
    )
    .await;
    let key = server.onboard().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let (status, _) = answer(
        server
            .client
            .get(server.api("/users"))
            .bearer_auth(&key)
            .header("traceparent", &traceparent),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    // A refusal names the caller's trace; a forged traceparent is ignored, not an error.
    let (status, problem) = answer(
        server
            .client
            .get(server.api("/users"))
            .bearer_auth(format!("{key}x"))
            .header("traceparent", &traceparent),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(problem["trace_id"], trace_id, "{problem}");
    let (_, problem) = answer(
        server
            .client
            .get(server.api("/nowhere"))
            .bearer_auth(&key)
            .header(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
    )
    .await;
    let own_trace = problem["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(own_trace.len(), 32, "{problem}");
    assert_ne!(own_trace, "0".repeat(32));
    // A secret value and the API key, which must appear in nothing exported.
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let (status, _) = answer(
        server
            .client
            .post(server.api("/secrets"))
            .bearer_auth(&key)
            .json(&json!({"name": "erp-token", "value": canary})),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let (_, value) = answer(
        server
            .client
            .get(server.api("/secrets/erp-token/value"))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(value["value"], canary.as_str());
    // An outbound call (the provider's discovery document, fetched at login) tells the provider
    // of the trace.
    let (_, provider) = answer(
        server
            .client
            .post(server.api("/identity-providers"))
            .bearer_auth(&key)
            .json(&json!({"name": "Corp", "kind": "oidc", "preset": "generic",
                "issuer": format!("http://127.0.0.1:{}/issuer", receiver.port),
                "client_id": "flowgate", "client_secret": "provider-secret",
                "email_domains": ["example.org"]})),
    )
    .await;
    let login = server
        .client
        .get(format!(
            "{}/t/acme/auth/oidc/{}/login",
            server.base,
            provider["id"].as_str().unwrap()
        ))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert!(
        !login.status().is_success(),
        "the discovery document is missing"
    );
    let (_, trail) = answer(
        server
            .client
            .get(server.api("/audit/events?limit=1000"))
            .bearer_auth(&key),
    )
    .await;
    server.stop().await;

    // Spans: the read, under the caller's trace, with what the pipeline learnt of it.
    let spans = items(
        &receiver.requests("traces"),
        "resourceSpans",
        "scopeSpans",
        "spans",
    );
    let (resource, span) = spans
        .iter()
        .find(|(_, s)| {
            s["traceId"] == id_b64(trace_id)
                && s["name"] == "GET /t/{tenant}/api/v1/users"
                && attributes(&s["attributes"])["http.response.status_code"] == "200"
        })
        .unwrap_or_else(|| panic!("no span of the read in {spans:?}"));
    assert_eq!(span["parentSpanId"], id_b64(parent_id));
    assert_eq!(span["kind"], "SPAN_KIND_SERVER");
    let seen = attributes(&span["attributes"]);
    for (attribute, expected) in [
        ("http.route", "/t/{tenant}/api/v1/users"),
        ("http.request.method", "GET"),
        ("flowgate.tenant", "acme"),
        ("flowgate.action", "user.read"),
        ("flowgate.decision", "allow"),
        ("flowgate.principal.type", "service_account"),
    ] {
        assert_eq!(
            seen.get(attribute),
            Some(&json!(expected)),
            "{attribute}: {seen:?}"
        );
    }
    let resource = attributes(&resource["attributes"]);
    assert_eq!(resource["service.name"], "flowgate");
    assert_eq!(resource["deployment.environment"], "test");
    assert!(
        receiver.requests("traces")[0]["headers"]["x-collector-tenant"] == "ops",
        "OTEL_EXPORTER_OTLP_HEADERS are sent"
    );
    assert!(
        spans.iter().any(
            |(_, s)| attributes(&s["attributes"]).get("http.response.status_code")
                == Some(&json!("401"))
                && s["traceId"] == id_b64(trace_id)
        ),
        "the refused call is traced too"
    );

    let outbound = json_lines(&receiver.dir.join("outbound.jsonl"));
    let discovery = outbound
        .iter()
        .find(|call| call["path"] == "/issuer/.well-known/openid-configuration")
        .unwrap_or_else(|| panic!("no discovery call in {outbound:?}"));
    let sent = discovery["headers"]["traceparent"].as_str().unwrap();
    assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
    let client_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s["name"] == "http.client" && s["kind"] == "SPAN_KIND_CLIENT")
        .unwrap_or_else(|| panic!("no client span in {spans:?}"));
    assert_eq!(client_span["spanId"], id_b64(&sent[36..52]));
    assert_eq!(client_span["traceId"], id_b64(trace_id));
    assert!(
        spans
            .iter()
            .any(|(_, s)| s["name"] == "db.begin" && s["traceId"] == id_b64(trace_id)),
        "the database work of a request is a child span"
    );
    // The key store's work too: the provider's client secret is kept there, under the span of
    // the call that registered it, named by purpose and never by value.
    let kept = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s["name"] == "keystore.put_record"
                && attributes(&s["attributes"]).get("flowgate.keystore.purpose")
                    == Some(&json!("idp-client-secret"))
        })
        .unwrap_or_else(|| panic!("no key-store span in {spans:?}"));
    assert_eq!(kept["kind"], "SPAN_KIND_INTERNAL");
    assert_eq!(
        attributes(&kept["attributes"]).get("flowgate.keystore.backend"),
        Some(&json!("local"))
    );
    let registered = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s["spanId"] == kept["parentSpanId"])
        .unwrap_or_else(|| panic!("the key-store span has no parent in {spans:?}"));
    assert_eq!(
        registered["name"], "POST /t/{tenant}/api/v1/identity-providers",
        "{registered}"
    );

    // Logs: every audit event of the tenant, with its place in the chain, in OCSF's shape.
    let records = items(
        &receiver.requests("logs"),
        "resourceLogs",
        "scopeLogs",
        "logRecords",
    );
    let exported: HashMap<i64, (HashMap<String, Value>, Value)> = records
        .iter()
        .map(|(_, r)| (attributes(&r["attributes"]), r))
        .filter(|(a, _)| a.get("flowgate.tenant") == Some(&json!("acme")))
        .map(|(a, r)| {
            let seq = a["flowgate.audit.seq"].as_str().unwrap().parse().unwrap();
            let body = serde_json::from_str(r["body"]["stringValue"].as_str().unwrap()).unwrap();
            (seq, (a, body))
        })
        .collect();
    let events = trail["items"].as_array().unwrap();
    assert!(events.len() >= 5, "{trail}");
    for event in events {
        let seq = event["seq"].as_i64().unwrap();
        let (attributes, body) = exported
            .get(&seq)
            .unwrap_or_else(|| panic!("event {seq} was not exported: {event}"));
        assert_eq!(attributes["flowgate.audit.hash"], event["hash"]);
        assert_eq!(body["unmapped"]["hash"], event["hash"]);
        assert_eq!(body["api"]["operation"], event["action"]);
        assert_eq!(body["metadata"]["sequence"], seq);
    }
    let class_of = |action: &str| {
        exported
            .values()
            .find(|(a, _)| a["flowgate.audit.action"] == action)
            .map(|(_, body)| (body["class_uid"].clone(), body["status"].clone()))
    };
    assert_eq!(
        class_of("auth.authenticate"),
        Some((json!(3002), json!("Failure")))
    );
    assert_eq!(class_of("user.read"), Some((json!(6003), json!("Success"))));
    assert_eq!(
        class_of("secret.read"),
        Some((json!(6003), json!("Success")))
    );

    // Metrics: the request durations by route, decisions and logins.
    let metrics = items(
        &receiver.requests("metrics"),
        "resourceMetrics",
        "scopeMetrics",
        "metrics",
    );
    let names: Vec<&str> = metrics
        .iter()
        .filter_map(|(_, m)| m["name"].as_str())
        .collect();
    for name in [
        "http.server.request.duration",
        "flowgate.authz.decisions",
        "flowgate.logins",
        "flowgate.audit.batch.size",
        "flowgate.cache.lookups",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    // Nothing secret on the wire: not the value, not the key, not the operator token.
    let wire = String::from_utf8_lossy(&receiver.wire()).into_owned();
    assert!(!wire.is_empty());
    for secret in [
        canary.as_str(),
        key.as_str(),
        OPERATOR_TOKEN,
        "provider-secret",
    ] {
        assert!(!wire.contains(secret), "a secret was exported");
    }
    drop(receiver.child);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_no_request_and_export_resumes_when_it_returns() {
    let dir = temp_dir("otlp-down");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Served::start(
        &dir,
        &[
            (
                "FLOWGATE_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{closed}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
            ("OTEL_BLRP_SCHEDULE_DELAY", "50".into()),
        ],
    )
    .await;
    let key = server.onboard().await;
    let calls = (0..100).map(|_| {
        server
            .client
            .get(server.api("/users"))
            .bearer_auth(&key)
            .send()
    });
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.unwrap().status(), reqwest::StatusCode::OK);
    }
    let mut failures = 0.0;
    for _ in 0..50 {
        let metrics = server
            .client
            .get(format!("{}/metrics", server.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        failures = metrics
            .lines()
            .find(|l| l.starts_with("flowgate_telemetry_export_failures_total{signal=\"traces\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if failures > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures > 0.0, "failed exports are counted");
    let log = std::fs::read_to_string(&server.log).unwrap();
    let warnings = log.matches("OTLP export failed").count();
    assert!(
        (1..=3).contains(&warnings),
        "a failing exporter is logged once per interval per signal, not per export: {warnings}"
    );

    // The collector comes back at the same address: spans and audit records flow again, with
    // no restart.
    let receiver = Receiver::start_on(&dir.join("received"), closed).await;
    let mut resumed = (false, false);
    for _ in 0..100 {
        let answer = server
            .client
            .get(server.api("/users"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::OK);
        let spans = items(
            &receiver.requests("traces"),
            "resourceSpans",
            "scopeSpans",
            "spans",
        );
        let logs = items(
            &receiver.requests("logs"),
            "resourceLogs",
            "scopeLogs",
            "logRecords",
        );
        resumed = (
            spans
                .iter()
                .any(|(_, s)| s["name"] == "GET /t/{tenant}/api/v1/users"),
            logs.iter()
                .any(|(_, r)| attributes(&r["attributes"])["flowgate.audit.action"] == "user.read"),
        );
        if resumed == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        resumed,
        (true, true),
        "export resumes once the collector answers"
    );
    drop(receiver.child);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
