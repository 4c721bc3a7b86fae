//! The HTTP surface: health, JWKS, the /v1 JSON API, and the route to the
//! proxy. Only this module and `proxy` know HTTP; handlers are thin calls
//! into `broker`.

mod extract;
pub(crate) mod handlers;
mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post};

pub use problem::Problem;

use crate::broker::Broker;

/// The whole application, ready to serve.
pub fn router(broker: Arc<Broker>) -> Router {
    let max_body = broker.config().server.max_body_bytes;
    let v1 = Router::new()
        .route("/credentials", post(handlers::mint))
        .route("/whoami", get(handlers::whoami))
        .route("/check", post(handlers::check))
        .route("/sessions/{sid}", delete(handlers::end_session))
        .route("/agents", get(handlers::list_agents).post(handlers::add_agent))
        .route("/agents/{name}", delete(handlers::remove_agent))
        .route("/revocations", post(handlers::revoke))
        .route("/keys/rotate", post(handlers::rotate_key))
        .route("/audit/events", get(handlers::audit_events));
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/.well-known/jwks.json", get(handlers::jwks))
        .nest("/v1", v1)
        .route("/p/{*rest}", any(crate::proxy::handle))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(broker)
}
