//! Application content: folders and process definitions.
//!
//! Functions here take the caller's transaction; authorization happened before (the handler's
//! `Authorized` argument), so they only keep the data consistent.

pub mod folders;
pub mod processes;
