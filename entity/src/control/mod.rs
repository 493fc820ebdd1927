//! Control-plane tables.

pub mod platform_setting;
pub mod tenant;
