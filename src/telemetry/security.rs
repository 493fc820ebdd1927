//! Security events for a SIEM: every audit event, once committed, becomes an OTLP log record in
//! the shape of an OCSF event (Open Cybersecurity Schema Framework 1.3), carrying the event's
//! sequence number and hash so the SIEM can check it against the trail; and logins are
//! counted by method and outcome.
//!
//! The mapping from our actions to OCSF classes is here and nowhere else:
//! - `auth.*` sign-ins and token grants: Authentication (3002), Logon or Logoff;
//!   `auth.*` enrolments and removals of factors: Account Change (3001);
//! - changes to who can do what (roles, bindings, policies, group memberships): User Access
//!   Management (3005), the class OCSF gives to granting and revoking privileges;
//! - people, service accounts, API keys and passkey resets: Account Change (3001);
//! - a signal (`security.signal`) or a rate-limit trip: Detection Finding (2004);
//! - automatic responses (`security.response`) and every other call: API Activity (6003),
//!   Create / Read / Update / Delete / Other.
//!
//! Invariant: a record carries what the audit event holds and nothing more; audit events never
//! hold a credential or a secret value.

use std::sync::Arc;
use std::time::SystemTime;

use entity::tenant::audit_event;
use opentelemetry_proto::tonic::logs::v1 as proto;
use serde::Serialize;
use serde_json::Value;

use super::otlp::wire::{self, Attribute};
use super::otlp::{self, ship::Signal};
use super::trace::unix_nanos;

/// An OCSF class, with the activity of one event in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OcsfClass {
    pub class_uid: u32,
    pub class_name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
}

const IAM: (u32, &str) = (3, "Identity & Access Management");
const APPLICATION: (u32, &str) = (6, "Application Activity");

fn class(
    (class_uid, class_name): (u32, &'static str),
    (category_uid, category_name): (u32, &'static str),
    (activity_id, activity_name): (u32, &'static str),
) -> OcsfClass {
    OcsfClass {
        class_uid,
        class_name,
        category_uid,
        category_name,
        activity_id,
        activity_name,
    }
}

const AUTHENTICATION: (u32, &str) = (3002, "Authentication");
const ACCOUNT_CHANGE: (u32, &str) = (3001, "Account Change");
const ACCESS_MANAGEMENT: (u32, &str) = (3005, "User Access Management");
const API_ACTIVITY: (u32, &str) = (6003, "API Activity");
const DETECTION_FINDING: (u32, &str) = (2004, "Detection Finding");
const FINDINGS: (u32, &str) = (2, "Findings");
const OTHER: (u32, &str) = (99, "Other");

/// The OCSF class and activity of an event of `action`.
pub fn ocsf_class(action: &str) -> OcsfClass {
    match action {
        "auth.login"
        | "auth.token"
        | "auth.authenticate"
        | "auth.webauthn_authenticate"
        | "auth.break_glass_login" => class(AUTHENTICATION, IAM, (1, "Logon")),
        "auth.logout" | "auth.logout_everywhere" | "auth.session_revoke" | "session.revoke" => {
            class(AUTHENTICATION, IAM, (2, "Logoff"))
        }
        "auth.webauthn_register" | "auth.break_glass_enroll" => {
            class(ACCOUNT_CHANGE, IAM, (10, "MFA Factor Enable"))
        }
        "auth.passkey_remove" | "passkey.reset" => {
            class(ACCOUNT_CHANGE, IAM, (11, "MFA Factor Disable"))
        }
        "user.create" | "service_account.create" => class(ACCOUNT_CHANGE, IAM, (1, "Create")),
        "user.enable" | "service_account.enable" => class(ACCOUNT_CHANGE, IAM, (2, "Enable")),
        "user.disable" | "service_account.disable" => class(ACCOUNT_CHANGE, IAM, (5, "Disable")),
        "security.signal" | "rate_limit.trip" => class(DETECTION_FINDING, FINDINGS, (1, "Create")),
        "role_binding.delete" => class(ACCESS_MANAGEMENT, IAM, (2, "Revoke Privileges")),
        "role.manage" | "role_binding.create" | "policy.manage" | "group.member_add" => {
            class(ACCESS_MANAGEMENT, IAM, (1, "Assign Privileges"))
        }
        _ if action.starts_with("auth.")
            || action.starts_with("user.")
            || action.starts_with("service_account.")
            || action.starts_with("api_key.") =>
        {
            if action.ends_with(".read") {
                class(API_ACTIVITY, APPLICATION, (2, "Read"))
            } else {
                class(ACCOUNT_CHANGE, IAM, OTHER)
            }
        }
        _ => class(API_ACTIVITY, APPLICATION, api_activity(action)),
    }
}

fn api_activity(action: &str) -> (u32, &'static str) {
    let verb = action.rsplit('.').next().unwrap_or_default();
    match verb {
        "create" | "write" | "execute" | "submit" => (1, "Create"),
        "read" | "list" | "export" | "verify" | "check" | "read_logs" | "use" => (2, "Read"),
        "update" | "edit" | "publish" | "configure" | "manage" | "rotate" | "complete"
        | "approve" | "member_add" => (3, "Update"),
        "delete" | "revoke" => (4, "Delete"),
        _ => OTHER,
    }
}

/// Appends the OCSF event of `row`, committed to the trail `trail`, as JSON:
/// ```json
/// {"class_uid", "class_name", "category_uid", "category_name", "activity_id", "activity_name",
///  "type_uid", "time" (ms), "severity_id", "status_id", "status", "status_code" (the HTTP
///  status, as text), "actor": {"user": {"uid", "type"}}, "api": {"operation" (the action),
///  "request": {"uid"}}, "resources": [{"uid" (or null), "type"}], "metadata": {"version",
///  "uid" (the event's id), "sequence", "tenant_uid", "product": {"name", "vendor_name",
///  "version"}}, "unmapped": {"decision", "hash", "prev_hash", "details"},
///  "src_endpoint": {"ip"} (when known), "http_request": {"user_agent"} (when known)}
/// ```
/// Written field by field (the export threads do it for every event: deriving `Serialize`
/// cost twice as much, each key escaped and each field a call through serde's machinery); the
/// keys are literals that need no escaping, and every value goes through serde_json.
pub fn write_ocsf(trail: &str, row: &audit_event::Model, out: &mut Vec<u8>) {
    let class = ocsf_class(&row.action);
    let failed = row.status >= 400 || row.decision == "deny";
    let (status_id, status) = if failed {
        (2, "Failure")
    } else {
        (1, "Success")
    };
    // Informational, or Medium for a refusal of a sign-in or of a change to access.
    let severity_id = if failed && matches!(class.class_uid, 3002 | 3005) {
        3
    } else {
        1
    };
    let mut id = uuid::Uuid::encode_buffer();
    let id = row.id.hyphenated().encode_lower(&mut id);
    let mut json = Json(out);
    json.field("{\"class_uid\":", &class.class_uid);
    json.field(",\"class_name\":", class.class_name);
    json.field(",\"category_uid\":", &class.category_uid);
    json.field(",\"category_name\":", class.category_name);
    json.field(",\"activity_id\":", &class.activity_id);
    json.field(",\"activity_name\":", class.activity_name);
    let type_uid = class.class_uid * 100 + class.activity_id;
    json.field(",\"type_uid\":", &type_uid);
    json.field(",\"time\":", &row.occurred_at.timestamp_millis());
    json.field(",\"severity_id\":", &severity_id);
    json.field(",\"status_id\":", &status_id);
    json.field(",\"status\":", status);
    json.field(",\"status_code\":\"", &row.status);
    json.field("\",\"actor\":{\"user\":{\"uid\":", row.actor_id.as_str());
    json.field(",\"type\":", row.actor_type.as_str());
    json.field("}},\"api\":{\"operation\":", row.action.as_str());
    json.field(",\"request\":{\"uid\":", row.request_id.as_str());
    json.field("}},\"resources\":[{\"uid\":", &row.resource_id);
    json.field(",\"type\":", row.resource_type.as_str());
    json.field("}],\"metadata\":{\"version\":\"1.3.0\",\"uid\":", &*id);
    json.field(",\"sequence\":", &row.seq);
    json.field(",\"tenant_uid\":", trail);
    let product_then_decision = concat!(
        ",\"product\":{\"name\":\"Flowgate\",\"vendor_name\":\"Flowgate\",\"version\":\"",
        env!("CARGO_PKG_VERSION"),
        "\"}},\"unmapped\":{\"decision\":"
    );
    json.field(product_then_decision, row.decision.as_str());
    json.field(",\"hash\":", row.hash.as_str());
    json.field(",\"prev_hash\":", row.prev_hash.as_str());
    json.field(",\"details\":", &row.details);
    json.raw("}");
    if let Some(ip) = &row.source_ip {
        json.field(",\"src_endpoint\":{\"ip\":", ip.as_str());
        json.raw("}");
    }
    if let Some(user_agent) = &row.user_agent {
        json.field(",\"http_request\":{\"user_agent\":", user_agent.as_str());
        json.raw("}");
    }
    json.raw("}");
}

/// JSON being written into a buffer.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    /// Appends `text`, which is JSON already.
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    /// Appends `value` as JSON. Strings, integers and `serde_json::Value`s (whose keys are
    /// strings and whose numbers are finite) cannot fail to serialize into a `Vec`.
    fn value<T: Serialize + ?Sized>(&mut self, value: &T) {
        let _ = serde_json::to_writer(&mut *self.0, value);
    }

    /// Appends `before` (JSON already: punctuation and a key) and then `value`.
    fn field<T: Serialize + ?Sized>(&mut self, before: &str, value: &T) {
        self.raw(before);
        self.value(value);
    }
}

/// The OCSF event of a committed audit row of `trail`, as JSON (for the alert webhook); `null`,
/// and a warning, were its details nested deeper than serde_json reads (128 levels: details
/// are the server's own, far shallower).
pub fn ocsf_event(trail: &str, row: &audit_event::Model) -> Value {
    let mut json = Vec::with_capacity(RECORD_BYTES);
    write_ocsf(trail, row, &mut json);
    serde_json::from_slice(&json).unwrap_or_else(|e| {
        tracing::warn!(tenant = trail, seq = row.seq, error = %e,
            "an audit event's OCSF form could not be read back for the webhook");
        Value::Null
    })
}

/// The login method of a sign-in or token action, for the logins metric.
pub fn login_method(action: &str) -> Option<&'static str> {
    Some(match action {
        "auth.login" => "sso",
        "auth.token" => "token",
        "auth.authenticate" => "api_credential",
        "auth.webauthn_authenticate" => "passkey",
        "auth.break_glass_login" => "break_glass",
        _ => return None,
    })
}

/// Hands the rows `trail` just committed to the SIEM: each one queued as an OTLP log record
/// (when exporting), and sign-ins counted.
pub fn committed(trail: &str, rows: &Arc<[audit_event::Model]>) {
    let metrics = super::metrics();
    for row in rows.iter() {
        if let Some(method) = login_method(&row.action) {
            metrics.observe_login(method, row.status < 400);
        }
    }
    let Some(exporting) = otlp::exporting() else {
        return;
    };
    let trail: Arc<str> = Arc::from(trail);
    let observed = SystemTime::now();
    exporting.logs.ship_all(
        (0..rows.len())
            .map(|index| AuditRecord::new(Arc::clone(&trail), Arc::clone(rows), index, observed)),
    );
}

/// About how many bytes an event's log record takes: its OCSF body (about 900 bytes, with its
/// details) and attributes.
const RECORD_BYTES: usize = 1536;

/// A committed audit event waiting for export: the `index`th of the `rows` committed together
/// (shared with the detectors, never copied); its OCSF body is made on the export thread.
#[derive(Debug)]
pub struct AuditRecord {
    trail: Arc<str>,
    rows: Arc<[audit_event::Model]>,
    index: usize,
    observed: SystemTime,
}

impl AuditRecord {
    /// The `index`th of `rows`, committed to `trail` and seen by the exporter at `observed`.
    pub fn new(
        trail: Arc<str>,
        rows: Arc<[audit_event::Model]>,
        index: usize,
        observed: SystemTime,
    ) -> Self {
        AuditRecord {
            trail,
            rows,
            index,
            observed,
        }
    }
}

impl Signal for AuditRecord {
    const NAME: &'static str = "logs";
    const RECORD_BYTES: usize = RECORD_BYTES;

    /// The event's OTLP `LogRecord` (`opentelemetry/proto/logs/v1`): its OCSF event as the
    /// body, its tenant, place in the chain, action, request and OCSF class as attributes.
    fn write(&self, out: &mut Vec<u8>) {
        let row = &self.rows[self.index];
        let failed = row.status >= 400 || row.decision == "deny";
        let (severity, text) = if failed {
            (proto::SeverityNumber::Warn, "WARN")
        } else {
            (proto::SeverityNumber::Info, "INFO")
        };
        wire::fixed64(1, unix_nanos(row.occurred_at.into()), out);
        wire::unsigned(2, severity as u64, out);
        wire::bytes(3, text.as_bytes(), out);
        // The body is an `AnyValue` whose string is the OCSF event's JSON, written in place.
        wire::delimited(5, out, |body| {
            wire::delimited(1, body, |json| write_ocsf(&self.trail, row, json));
        });
        let class = i64::from(ocsf_class(&row.action).class_uid);
        for (name, value) in [
            ("flowgate.tenant", Attribute::Text(&self.trail)),
            ("flowgate.audit.seq", Attribute::Int(row.seq)),
            ("flowgate.audit.hash", Attribute::Text(&row.hash)),
            ("flowgate.audit.action", Attribute::Text(&row.action)),
            ("flowgate.request_id", Attribute::Text(&row.request_id)),
            ("ocsf.class_uid", Attribute::Int(class)),
        ] {
            wire::attribute(6, name, value, out);
        }
        wire::fixed64(11, unix_nanos(self.observed), out);
        wire::bytes(12, b"flowgate.audit", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
    use opentelemetry_sdk::Resource;
    use prost::Message as _;
    use serde_json::json;

    fn row(action: &str, status: i32, decision: &str) -> audit_event::Model {
        audit_event::Model {
            seq: 7,
            id: uuid::Uuid::nil(),
            occurred_at: Utc::now(),
            request_id: "r1".into(),
            actor_type: "user".into(),
            actor_id: "u1".into(),
            action: action.into(),
            resource_type: "tenant".into(),
            resource_id: None,
            decision: decision.into(),
            status,
            source_ip: Some("10.0.0.1".into()),
            user_agent: None,
            details: json!({"method": "GET"}),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn sign_ins_are_authentication_and_grants_are_access_management() {
        assert_eq!(ocsf_class("auth.login").class_uid, 3002);
        assert_eq!(ocsf_class("auth.login").activity_id, 1);
        assert_eq!(ocsf_class("auth.logout").activity_id, 2);
        assert_eq!(ocsf_class("auth.webauthn_register").class_uid, 3001);
        assert_eq!(ocsf_class("auth.webauthn_register").activity_id, 10);
        assert_eq!(ocsf_class("role_binding.create").class_uid, 3005);
        assert_eq!(ocsf_class("role_binding.delete").activity_id, 2);
        assert_eq!(ocsf_class("policy.manage").class_uid, 3005);
        assert_eq!(ocsf_class("user.create").class_uid, 3001);
        assert_eq!(ocsf_class("api_key.revoke").class_uid, 3001);
        assert_eq!(ocsf_class("user.read").class_uid, 6003);
        assert_eq!(ocsf_class("secret.read").class_uid, 6003);
        assert_eq!(ocsf_class("secret.read").activity_id, 2);
        assert_eq!(ocsf_class("process.delete").activity_id, 4);
        assert_eq!(ocsf_class("request").activity_id, 99);
        assert_eq!(ocsf_class("security.signal").class_uid, 2004);
    }

    #[test]
    fn an_event_carries_its_place_in_the_chain_and_its_outcome() {
        let event = ocsf_event("acme", &row("auth.login", 401, "none"));
        assert_eq!(event["type_uid"], 300201);
        assert_eq!(event["status"], "Failure");
        assert_eq!(event["severity_id"], 3);
        assert_eq!(event["metadata"]["sequence"], 7);
        assert_eq!(event["metadata"]["tenant_uid"], "acme");
        assert_eq!(event["unmapped"]["hash"], "a".repeat(64));
        assert_eq!(event["src_endpoint"]["ip"], "10.0.0.1");
        let read = ocsf_event("acme", &row("user.read", 200, "allow"));
        assert_eq!(read["status_id"], 1);
        assert_eq!(read["severity_id"], 1);
        let denied = ocsf_event("acme", &row("user.create", 403, "deny"));
        assert_eq!(denied["status"], "Failure");
    }

    fn text(key: &str, value: &str) -> ProtoKeyValue {
        ProtoKeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn int(key: &str, value: i64) -> ProtoKeyValue {
        ProtoKeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(value)),
            }),
            ..Default::default()
        }
    }

    /// What is written decodes (prost) as the log record each event stands for: its OCSF event
    /// as the body (one whose length takes three bytes among them), its place in the chain and
    /// its request as attributes, and its outcome's severity; and a batch as the export request
    /// of them all.
    #[test]
    fn audit_records_decode_as_their_log_records() {
        let mut large = row("secret.read", 200, "allow");
        large.details = json!({"note": "x".repeat(20_000)});
        let rows: Arc<[audit_event::Model]> = vec![
            row("user.create", 403, "deny"),
            row("user.read", 200, "allow"),
            large,
        ]
        .into();
        let observed = SystemTime::now();
        let trail: Arc<str> = Arc::from("acme");
        let severities = [
            (proto::SeverityNumber::Warn, "WARN"),
            (proto::SeverityNumber::Info, "INFO"),
            (proto::SeverityNumber::Info, "INFO"),
        ];
        let mut expected = Vec::new();
        for (index, (severity, severity_text)) in severities.into_iter().enumerate() {
            let row = &rows[index];
            let mut body = Vec::new();
            write_ocsf("acme", row, &mut body);
            let body = String::from_utf8(body).unwrap();
            let class = i64::from(ocsf_class(&row.action).class_uid);
            let record = proto::LogRecord {
                time_unix_nano: unix_nanos(row.occurred_at.into()),
                observed_time_unix_nano: unix_nanos(observed),
                severity_number: severity as i32,
                severity_text: severity_text.to_owned(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                attributes: vec![
                    text("flowgate.tenant", "acme"),
                    int("flowgate.audit.seq", row.seq),
                    text("flowgate.audit.hash", &row.hash),
                    text("flowgate.audit.action", &row.action),
                    text("flowgate.request_id", &row.request_id),
                    int("ocsf.class_uid", class),
                ],
                event_name: "flowgate.audit".to_owned(),
                ..Default::default()
            };
            let mut written = Vec::new();
            AuditRecord::new(Arc::clone(&trail), Arc::clone(&rows), index, observed)
                .write(&mut written);
            assert_eq!(
                proto::LogRecord::decode(written.as_slice()).unwrap(),
                record
            );
            expected.push(record);
        }
        let batch = (0..rows.len())
            .map(|index| AuditRecord::new(Arc::clone(&trail), Arc::clone(&rows), index, observed))
            .collect();
        let request = AuditRecord::encode(batch, &Resource::builder_empty().build());
        let decoded = ExportLogsServiceRequest::decode(request.as_slice()).unwrap();
        assert_eq!(decoded.resource_logs[0].scope_logs[0].log_records, expected);
    }

    /// The whole event, against a literal: every field where OCSF puts it, values that need
    /// escaping escaped, optional fields present only when known.
    #[test]
    fn the_ocsf_event_is_the_documented_json() {
        let mut event = row("user.create", 403, "deny");
        event.id = uuid::Uuid::from_u128(0x0193a7c4_5f7e_7c1a_9d2b_3e4f5a6b7c8d);
        event.occurred_at = chrono::DateTime::from_timestamp_millis(1_764_900_000_123).unwrap();
        event.actor_id = "quote\" back\\ tab\t é".into();
        event.user_agent = Some("curl/8 \u{1}".into());
        event.details = json!({"nested": {"list": [1, "two", null]}});
        let expected = json!({
            "class_uid": 3001, "class_name": "Account Change",
            "category_uid": 3, "category_name": "Identity & Access Management",
            "activity_id": 1, "activity_name": "Create", "type_uid": 300101,
            "time": 1_764_900_000_123_i64, "severity_id": 1, "status_id": 2, "status": "Failure",
            "status_code": "403",
            "actor": {"user": {"uid": "quote\" back\\ tab\t é", "type": "user"}},
            "api": {"operation": "user.create", "request": {"uid": "r1"}},
            "resources": [{"uid": null, "type": "tenant"}],
            "metadata": {"version": "1.3.0", "uid": "0193a7c4-5f7e-7c1a-9d2b-3e4f5a6b7c8d",
                "sequence": 7, "tenant_uid": "acme",
                "product": {"name": "Flowgate", "vendor_name": "Flowgate",
                    "version": env!("CARGO_PKG_VERSION")}},
            "unmapped": {"decision": "deny", "hash": "a".repeat(64), "prev_hash": "0".repeat(64),
                "details": {"nested": {"list": [1, "two", null]}}},
            "src_endpoint": {"ip": "10.0.0.1"},
            "http_request": {"user_agent": "curl/8 \u{1}"},
        });
        assert_eq!(ocsf_event("acme", &event), expected);
        // And byte for byte: the fields' order, no key twice, the escapes as serde_json makes them.
        let mut written = Vec::new();
        write_ocsf("acme", &event, &mut written);
        let exact = format!(
            "{{\"class_uid\":3001,\"class_name\":\"Account Change\",\"category_uid\":3,\
             \"category_name\":\"Identity & Access Management\",\"activity_id\":1,\
             \"activity_name\":\"Create\",\"type_uid\":300101,\"time\":1764900000123,\
             \"severity_id\":1,\"status_id\":2,\"status\":\"Failure\",\"status_code\":\"403\",\
             \"actor\":{{\"user\":{{\"uid\":\"quote\\\" back\\\\ tab\\t é\",\"type\":\"user\"}}}},\
             \"api\":{{\"operation\":\"user.create\",\"request\":{{\"uid\":\"r1\"}}}},\
             \"resources\":[{{\"uid\":null,\"type\":\"tenant\"}}],\
             \"metadata\":{{\"version\":\"1.3.0\",\"uid\":\"0193a7c4-5f7e-7c1a-9d2b-3e4f5a6b7c8d\",\
             \"sequence\":7,\"tenant_uid\":\"acme\",\"product\":{{\"name\":\"Flowgate\",\
             \"vendor_name\":\"Flowgate\",\"version\":\"{version}\"}}}},\
             \"unmapped\":{{\"decision\":\"deny\",\"hash\":\"{hash}\",\"prev_hash\":\"{prev}\",\
             \"details\":{{\"nested\":{{\"list\":[1,\"two\",null]}}}}}},\
             \"src_endpoint\":{{\"ip\":\"10.0.0.1\"}},\
             \"http_request\":{{\"user_agent\":\"curl/8 \\u0001\"}}}}",
            version = env!("CARGO_PKG_VERSION"),
            hash = "a".repeat(64),
            prev = "0".repeat(64),
        );
        assert_eq!(String::from_utf8(written).unwrap(), exact);
        // Unknown address and agent: absent; a resource's id when there is one.
        (event.source_ip, event.user_agent, event.resource_id) = (None, None, Some("u9".into()));
        let written = ocsf_event("acme", &event);
        assert!(written.get("src_endpoint").is_none() && written.get("http_request").is_none());
        assert_eq!(
            written["resources"],
            json!([{"uid": "u9", "type": "tenant"}])
        );
        assert_eq!(written.as_object().unwrap().len(), 17, "{written}");
    }

    #[test]
    fn logins_are_counted_by_method() {
        assert_eq!(login_method("auth.login"), Some("sso"));
        assert_eq!(login_method("auth.webauthn_authenticate"), Some("passkey"));
        assert_eq!(login_method("user.read"), None);
    }
}
