//! valetkey: a least-privilege credential broker for AI agents.
//!
//! The broker holds the real provider tokens. Agents get short-lived
//! credentials scoped to one environment with every destructive scope
//! stripped, and reach providers through the broker. See ARCHITECTURE.md for
//! the map of this crate and the invariants it keeps.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod approvals;
pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
pub mod credentials;
pub mod database_check;
pub mod databases;
pub mod forward;
pub mod heartbeat;
pub mod introspect;
pub mod isolation;
pub mod listener;
pub mod mcp;
pub mod peer;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod ratelimit;
pub mod scan;
pub mod secrets;
pub mod server;
pub mod session_limits;
pub mod store;
pub mod time;
pub mod tls;
pub mod trust;

#[cfg(test)]
mod fuzzing;
