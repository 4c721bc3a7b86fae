//! Pure decision logic: what a credential may hold and, later, whether a
//! request is allowed.
//!
//! Nothing here does I/O or reads the clock; the time, the configuration and
//! the request come in as plain data. That keeps every decision testable in
//! isolation and identical wherever it is made (API, CLI, proxy).

mod mint;
mod tier;

pub use mint::{
    ANY_UNPROTECTED, CredentialLimits, Grant, MintPlan, MintRefusal, MintRequest, Rules, StripReason, Stripped,
    TtlLimit, plan_mint,
};
pub use tier::Tier;
