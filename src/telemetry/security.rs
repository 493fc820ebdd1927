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
use opentelemetry_sdk::Resource;
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

/// The OCSF event of a committed audit row, borrowed from the row: serialized straight into a
/// log record's body (building a `serde_json::Value` first cost a fifth of the export).
#[derive(Serialize)]
pub struct OcsfEvent<'a> {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
    type_uid: u32,
    time: i64,
    severity_id: u8,
    status_id: u8,
    status: &'static str,
    status_code: String,
    actor: Actor<'a>,
    api: Api<'a>,
    resources: [Named<'a>; 1],
    metadata: Metadata<'a>,
    unmapped: Unmapped<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_request: Option<HttpRequest<'a>>,
}

#[derive(Serialize)]
struct Actor<'a> {
    user: Named<'a>,
}

/// An OCSF object with a `uid` and a `type`.
#[derive(Serialize)]
struct Named<'a> {
    uid: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Api<'a> {
    operation: &'a str,
    request: Uid<'a>,
}

#[derive(Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    version: &'static str,
    uid: String,
    sequence: i64,
    tenant_uid: &'a str,
    product: Product,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    decision: &'a str,
    hash: &'a str,
    prev_hash: &'a str,
    details: &'a Value,
}

#[derive(Serialize)]
struct Endpoint<'a> {
    ip: &'a str,
}

#[derive(Serialize)]
struct HttpRequest<'a> {
    user_agent: &'a str,
}

impl<'a> OcsfEvent<'a> {
    /// The event of `row`, committed to the trail `trail`.
    pub fn of(trail: &'a str, row: &'a audit_event::Model) -> Self {
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
        OcsfEvent {
            class_uid: class.class_uid,
            class_name: class.class_name,
            category_uid: class.category_uid,
            category_name: class.category_name,
            activity_id: class.activity_id,
            activity_name: class.activity_name,
            type_uid: class.class_uid * 100 + class.activity_id,
            time: row.occurred_at.timestamp_millis(),
            severity_id,
            status_id,
            status,
            status_code: row.status.to_string(),
            actor: Actor {
                user: Named {
                    uid: Some(&row.actor_id),
                    kind: &row.actor_type,
                },
            },
            api: Api {
                operation: &row.action,
                request: Uid {
                    uid: &row.request_id,
                },
            },
            resources: [Named {
                uid: row.resource_id.as_deref(),
                kind: &row.resource_type,
            }],
            metadata: Metadata {
                version: "1.3.0",
                uid: row.id.to_string(),
                sequence: row.seq,
                tenant_uid: trail,
                product: Product {
                    name: "Flowgate",
                    vendor_name: "Flowgate",
                    version: env!("CARGO_PKG_VERSION"),
                },
            },
            unmapped: Unmapped {
                decision: &row.decision,
                hash: &row.hash,
                prev_hash: &row.prev_hash,
                details: &row.details,
            },
            src_endpoint: row.source_ip.as_deref().map(|ip| Endpoint { ip }),
            http_request: row
                .user_agent
                .as_deref()
                .map(|user_agent| HttpRequest { user_agent }),
        }
    }
}

/// The OCSF event of a committed audit row of `trail`, as JSON (for the alert webhook).
pub fn ocsf_event(trail: &str, row: &audit_event::Model) -> Value {
    serde_json::to_value(OcsfEvent::of(trail, row)).unwrap_or_default()
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

    /// Writes the event as an OTLP `LogRecord` message (`opentelemetry/proto/logs/v1`), in
    /// field order: its OCSF event as the body, its tenant, place in the chain, action, request
    /// and OCSF class as attributes.
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
        // Serializing borrowed strings and a JSON value cannot fail; were it to, the string
        // would be cut back to empty, never left half written.
        wire::delimited(5, out, |body| {
            wire::delimited(1, body, |json| {
                let start = json.len();
                if serde_json::to_writer(&mut *json, &OcsfEvent::of(&self.trail, row)).is_err() {
                    json.truncate(start);
                }
            });
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

impl Signal for AuditRecord {
    const NAME: &'static str = "logs";

    fn encode(batch: Vec<Self>, resource: &Resource) -> Vec<u8> {
        let (resource, schema_url) = otlp::resource_proto(resource);
        let mut records = Vec::with_capacity(batch.len() * RECORD_BYTES);
        for record in &batch {
            wire::delimited(2, &mut records, |out| record.write(out));
        }
        otlp::export_request(&resource, &schema_url, &otlp::scope(), &records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
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
            let body = serde_json::to_string(&OcsfEvent::of("acme", row)).unwrap();
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

    #[test]
    fn logins_are_counted_by_method() {
        assert_eq!(login_method("auth.login"), Some("sso"));
        assert_eq!(login_method("auth.webauthn_authenticate"), Some("passkey"));
        assert_eq!(login_method("user.read"), None);
    }
}
