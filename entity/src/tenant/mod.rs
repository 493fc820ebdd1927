//! Tables inside every tenant's schema (PostgreSQL) or file (SQLite).

pub mod api_key;
pub mod audit_checkpoint;
pub mod audit_event;
pub mod audit_head;
pub mod group;
pub mod group_member;
pub mod role_binding;
pub mod service_account;
pub mod user;
