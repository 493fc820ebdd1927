//! The question a decision answers, as Cedar sees it: who asks ([`Subject`]), about what
//! ([`Resource`], with its containers), and in what circumstances ([`Facts`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use cedar_policy::EntityUid;
use uuid::Uuid;

use crate::authz::schema::EntityKind;

/// Who is asking, as Cedar sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: EntityKind,
    pub id: String,
    /// Ids of the groups the subject belongs to.
    pub groups: Vec<String>,
    /// Claims, as entity tags.
    pub tags: BTreeMap<String, String>,
}

impl Subject {
    pub fn service_account(id: Uuid) -> Self {
        Subject {
            kind: EntityKind::ServiceAccount,
            id: id.to_string(),
            groups: Vec::new(),
            tags: BTreeMap::new(),
        }
    }

    /// The subject as a Cedar entity.
    pub(in crate::authz) fn uid(&self) -> EntityUid {
        self.kind.uid(&self.id)
    }

    /// The groups the subject belongs to, as Cedar entities.
    pub(super) fn group_uids(&self) -> Vec<EntityUid> {
        self.groups
            .iter()
            .map(|g| EntityKind::Group.uid(g))
            .collect()
    }
}

/// What is asked about: a resource and its containers, nearest first. The tenant contains
/// everything and is implicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: EntityKind,
    pub id: String,
    pub containers: Vec<(EntityKind, String)>,
}

/// Who asks to hand something out (a delegation check): the principal, the facts of the
/// request it asks in, and the actions refused to it before any policy (a tenant's human-only
/// actions, for a service account), so that what it holds is what its own requests may do.
#[derive(Debug, Clone)]
pub struct Grantor<'a> {
    pub subject: &'a Subject,
    pub facts: Facts,
    pub reserved: &'a [String],
}

/// Facts about the request that policies may use in `context`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub source_ip: Option<IpAddr>,
    /// Seconds since the caller's second factor.
    pub mfa_age: Option<i64>,
    /// For actions that carry one (`task.approve`).
    pub amount: Option<i64>,
    /// Unix seconds; now when absent.
    pub now: Option<i64>,
}
