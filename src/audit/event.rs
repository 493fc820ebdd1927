//! One audit event before it joins the chain.

use chrono::{DateTime, SubsecRound as _, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Longest user agent kept in an event.
const MAX_USER_AGENT: usize = 512;

/// Where a request came from; carried into every event it causes.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// HTTP method and path (never the query string, which may carry secrets).
    pub method: Option<String>,
    pub path: Option<String>,
}

/// How an authorization decision went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    /// No decision was reached (unauthenticated, unknown route, failure before authorization).
    None,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::None => "none",
        }
    }
}

/// An event to append: who did what to which resource, from where, and how it ended.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: Uuid,
    /// Truncated to microseconds, the precision both databases keep, so hashes survive storage.
    pub occurred_at: DateTime<Utc>,
    pub request_id: String,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub decision: Outcome,
    pub status: u16,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Extra facts (policy reasons, failure causes); never secrets.
    pub details: Value,
}

impl AuditEvent {
    /// A new event of `action` on `resource_type` for the request described by `meta`.
    pub fn new(meta: &RequestMeta, action: &str, resource_type: &str) -> Self {
        AuditEvent {
            id: Uuid::new_v4(),
            occurred_at: Utc::now().trunc_subsecs(6),
            request_id: meta.request_id.clone(),
            actor_type: "anonymous".into(),
            actor_id: String::new(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: None,
            decision: Outcome::None,
            status: 0,
            source_ip: meta.source_ip.clone(),
            user_agent: meta
                .user_agent
                .as_deref()
                .map(|ua| truncate(ua, MAX_USER_AGENT)),
            details: Value::Object(Default::default()),
        }
        .http(meta)
    }

    fn http(self, meta: &RequestMeta) -> Self {
        let with_method = match &meta.method {
            Some(method) => self.detail("method", method.as_str()),
            None => self,
        };
        match &meta.path {
            Some(path) => with_method.detail("path", path.as_str()),
            None => with_method,
        }
    }

    pub fn actor(mut self, actor_type: &str, actor_id: impl Into<String>) -> Self {
        self.actor_type = actor_type.to_owned();
        self.actor_id = actor_id.into();
        self
    }

    pub fn resource_id(mut self, id: impl Into<String>) -> Self {
        self.resource_id = Some(id.into());
        self
    }

    pub fn outcome(mut self, decision: Outcome, status: u16) -> Self {
        self.decision = decision;
        self.status = status;
        self
    }

    /// Adds `key: value` to the details.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => s[..cut].to_owned(),
        None => s.to_owned(),
    }
}
