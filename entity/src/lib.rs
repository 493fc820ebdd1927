//! sea-orm entities of Flowgate.
//!
//! `control` holds the control plane (PostgreSQL schema `flowgate`, or the control-plane SQLite
//! file); `tenant` holds the tables every tenant has in its own schema or file. Table names are
//! never schema-qualified: the connection's `search_path` (PostgreSQL) or the file (SQLite)
//! decides which tenant a statement touches.

pub mod control;
pub mod tenant;
