//! Pure decision logic: what a credential may hold (`plan_mint`) and whether
//! a proxied request may reach the provider (`decide`).
//!
//! Nothing here does I/O or reads the clock; the time, the configuration and
//! the request come in as plain data. That keeps every decision testable in
//! isolation and identical wherever it is made (API, CLI, proxy).

mod decide;
mod mint;
mod tier;

pub use decide::{
    Access, ApprovalNeed, Beyond, BoundOperation, BoundResource, Decision, ENVIRONMENT_KIND, Operation,
    ProviderResources, Refusal, ResourceRef, approval_need, decide,
};

pub use mint::{
    ANY_UNPROTECTED, CredentialLimits, Grant, MintPlan, MintRefusal, MintRequest, Rules, StripReason, Stripped,
    TtlLimit, parse_lifetime, plan_mint,
};
pub use tier::Tier;
