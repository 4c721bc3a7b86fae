//! The HTTP surface: health, JWKS, the /v1 JSON API, and the route to the
//! proxy. Only this module and `proxy` know HTTP; handlers are thin calls
//! into `broker`.

mod admin;
pub mod agent;
mod approvals;
mod extract;
pub(crate) mod handlers;
mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post, put};

pub(crate) use extract::bearer;
pub use problem::{Problem, next_step};

use crate::broker::Broker;

/// The whole application, ready to serve.
pub fn router(broker: Arc<Broker>) -> Router {
    let max_body = broker.config().server.max_body_bytes;
    let console = match crate::console::router(broker.clone()) {
        Ok(console) => console,
        Err(why) => {
            tracing::error!(%why, "the console is enabled but cannot start; it is off");
            None
        }
    };
    let v1 = Router::new()
        .route("/credentials", post(handlers::mint))
        .route("/isolation", get(handlers::isolation))
        .route("/whoami", get(handlers::whoami))
        .route("/check", post(handlers::check))
        .route("/events/{id}", get(handlers::event))
        .route("/sessions/{sid}", delete(handlers::end_session))
        .route("/sessions/{sid}/heartbeat", post(handlers::heartbeat))
        .route("/admins", get(admin::list_admins).post(admin::add_admin))
        .route("/admins/{name}", delete(admin::remove_admin))
        .route("/agents", get(admin::list_agents).post(admin::add_agent))
        .route("/agents/{name}", delete(admin::remove_agent))
        .route("/secrets", get(admin::list_secrets))
        .route("/secrets/{name}", put(admin::put_secret).delete(admin::remove_secret))
        .route("/revocations", post(admin::revoke))
        .route("/keys/rotate", post(admin::rotate_key))
        .route("/ca.pem", get(handlers::ca_pem))
        .route("/ca/rotate", post(admin::rotate_ca))
        .route("/keys/rotate-master", post(admin::rotate_master))
        .route("/audit/events", get(admin::audit_events))
        .route("/audit/keys", get(handlers::audit_keys))
        .route("/audit/verify", get(admin::verify_audit))
        .route("/audit/report", get(admin::audit_report))
        .route("/approvals", get(approvals::list_approvals).post(approvals::request))
        .route("/approvals/{id}", get(approvals::get_approval))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/approvers", get(approvals::list_approvers))
        .route("/approvers/vouch", post(approvals::vouch))
        .route("/approvers/{name}/invitations", post(approvals::invite))
        .route("/approvers/{name}/enrollment", post(approvals::enroll))
        .route("/approvers/{name}/confirmation", post(approvals::confirm));
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/.well-known/jwks.json", get(handlers::jwks))
        .nest("/v1", v1)
        .nest("/console", console.unwrap_or_default())
        .merge(crate::mcp::http::router(broker.clone()))
        .route("/p/{*rest}", any(crate::proxy::handle))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(broker)
}
