//! The console's pages: plain data views of the broker's state, rendered by
//! askama templates (`templates/console/`), which escape what they print.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Console, Session, SignedIn, State, constant_time_eq, forbidden};
use crate::admin::Actor;
use crate::api::Problem;
use crate::approvals::{Approval, may_decide, status, summary};
use crate::store::RevokeTarget;
use crate::time::{rfc3339, rfc3339_ms, unix_ms, unix_secs};

/// What every page's frame shows.
pub struct Chrome {
    pub title: &'static str,
    pub section: &'static str,
    pub approver: Option<String>,
    pub csrf: String,
}

impl Chrome {
    fn signed_out(title: &'static str) -> Chrome {
        Chrome {
            title,
            section: "",
            approver: None,
            csrf: String::new(),
        }
    }

    fn of(session: &Session, title: &'static str, section: &'static str) -> Chrome {
        Chrome {
            title,
            section,
            approver: Some(session.approver.clone()),
            csrf: session.csrf.clone(),
        }
    }
}

fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignInPage {
    chrome: Chrome,
}

#[derive(Template)]
#[template(path = "console/enroll.html")]
struct EnrollPage {
    chrome: Chrome,
}

pub async fn home() -> Redirect {
    Redirect::to("/console/approvals")
}

pub async fn signin() -> Response {
    page(&SignInPage {
        chrome: Chrome::signed_out("Sign in"),
    })
}

pub async fn enroll() -> Response {
    page(&EnrollPage {
        chrome: Chrome::signed_out("Register your passkey"),
    })
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// The refusal of a form without the session's CSRF token, if it has none.
fn unchecked_form(session: &Session, form: &CsrfForm) -> Option<Response> {
    (!constant_time_eq(&form.csrf, &session.csrf)).then(|| forbidden("the form carries no valid CSRF token"))
}

pub async fn signout(
    axum::extract::State(console): State,
    SignedIn(session): SignedIn,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = unchecked_form(&session, &form) {
        return refused;
    }
    console.sessions.invalidate(&session.id);
    let mut response = Redirect::to("/console/signin").into_response();
    let expired = format!(
        "{}=; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        super::COOKIE
    );
    if let Ok(value) = header::HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A held request as approvers read it.
pub struct ApprovalView {
    pub id: String,
    pub agent: String,
    pub env: String,
    pub provider: String,
    pub method: String,
    pub path: String,
    pub tier: &'static str,
    pub status: &'static str,
    pub environments: String,
    pub approvers_needed: u8,
    pub approved_count: usize,
    pub approved: String,
    pub decide_by: String,
    pub execute_by: Option<String>,
    pub denied: Option<String>,
    pub digest: String,
    pub summary: String,
    pub operations: Vec<OperationView>,
}

pub struct OperationView {
    pub name: String,
    pub tier: &'static str,
    /// What the rule pack says the operation's scope does.
    pub destroys: String,
    pub resources: Vec<ResourceView>,
}

pub struct ResourceView {
    pub kind: String,
    pub id: String,
    pub owners: String,
    pub shared: bool,
}

fn view(console: &Console, a: &Approval, now_ms: i64) -> ApprovalView {
    let operations = a
        .operations
        .iter()
        .map(|op| {
            let scope = op.scope.as_deref().unwrap_or_default();
            OperationView {
                name: op.name.clone(),
                tier: op.tier.as_str(),
                destroys: console
                    .broker
                    .scope_description(&a.provider, scope)
                    .unwrap_or_else(|| format!("needs `{scope}`")),
                resources: op
                    .resources
                    .iter()
                    .map(|r| ResourceView {
                        kind: r.kind.clone(),
                        id: r.id.clone(),
                        owners: r.owned_by(),
                        shared: r.shared(),
                    })
                    .collect(),
            }
        })
        .collect();
    ApprovalView {
        id: a.id.clone(),
        agent: a.agent.clone(),
        env: a.env.clone(),
        provider: a.provider.clone(),
        method: a.method.clone(),
        path: a.path.clone(),
        tier: a.tier.as_str(),
        status: status(a, now_ms).as_str(),
        environments: a.environments.join(" and "),
        approvers_needed: a.approvers_needed,
        approved_count: a.approved_by.len(),
        approved: a.approved_by.join(", "),
        decide_by: rfc3339_ms(a.decide_by_ms),
        execute_by: a.execute_by_ms.map(rfc3339_ms),
        denied: a
            .denied_by
            .as_ref()
            .map(|by| format!("by {by}: {}", a.reason.as_deref().unwrap_or(""))),
        digest: a.digest.clone(),
        summary: summary(a),
        operations,
    }
}

/// A factor registered and awaiting a vouch.
pub struct WaitingView {
    pub approver: String,
    pub factor: String,
    pub registered_at: String,
}

#[derive(Template)]
#[template(path = "console/queue.html")]
struct QueuePage {
    chrome: Chrome,
    approvals: Vec<ApprovalView>,
    waiting: Vec<WaitingView>,
}

pub async fn queue(axum::extract::State(console): State, SignedIn(session): SignedIn) -> Response {
    let open = match console.broker.store().open_approvals().await {
        Ok(open) => open,
        Err(e) => return Problem::store(&e).into_response(),
    };
    let waiting = match console.broker.store().awaiting_vouch().await {
        Ok(waiting) => waiting,
        Err(e) => return Problem::store(&e).into_response(),
    };
    let cutoff = console.broker.enrollment_cutoff(Console::now());
    let now_ms = unix_ms(Console::now());
    page(&QueuePage {
        chrome: Chrome::of(&session, "Held requests", "approvals"),
        approvals: open.iter().map(|a| view(&console, a, now_ms)).collect(),
        waiting: waiting
            .into_iter()
            .filter(|(_, _, since)| *since >= cutoff)
            .map(|(approver, factor, since)| WaitingView {
                approver,
                factor,
                registered_at: rfc3339(since),
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "console/approval.html")]
struct ApprovalPage {
    chrome: Chrome,
    a: ApprovalView,
    /// Why the signed-in approver may not decide on it, when they may not.
    cannot_decide: Option<String>,
}

pub async fn approval(
    axum::extract::State(console): State,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let found = match console.broker.store().approval(&id).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Problem::not_found(format!("there is no approval `{id}`")),
            )
                .into_response();
        }
        Err(e) => return Problem::store(&e).into_response(),
    };
    let config = console
        .broker
        .config()
        .approvers
        .get(&session.approver)
        .map(|c| c.get_ref());
    let cannot_decide = may_decide(&session.approver, config, &found)
        .err()
        .map(|e| e.to_string());
    page(&ApprovalPage {
        chrome: Chrome::of(&session, "Held request", "approvals"),
        a: view(&console, &found, unix_ms(Console::now())),
        cannot_decide,
    })
}

pub struct LeaseView {
    pub agent: String,
    pub env: String,
    pub scopes: String,
    pub expires: String,
    pub session_id: String,
}

#[derive(Template)]
#[template(path = "console/sessions.html")]
struct SessionsPage {
    chrome: Chrome,
    leases: Vec<LeaseView>,
}

pub async fn sessions(axum::extract::State(console): State, SignedIn(session): SignedIn) -> Response {
    let live = match console.broker.store().live_leases(unix_secs(Console::now()), 500).await {
        Ok(live) => live,
        Err(e) => return Problem::store(&e).into_response(),
    };
    let leases = live
        .into_iter()
        .map(|l| LeaseView {
            scopes: l
                .grants
                .iter()
                .map(|(provider, scopes)| format!("{provider}: {}", scopes.join(", ")))
                .collect::<Vec<_>>()
                .join("; "),
            agent: l.agent,
            env: l.env,
            expires: rfc3339(l.expires_at),
            session_id: l.session_id,
        })
        .collect();
    page(&SessionsPage {
        chrome: Chrome::of(&session, "Live sessions", "sessions"),
        leases,
    })
}

pub async fn revoke(
    axum::extract::State(console): State,
    SignedIn(session): SignedIn,
    Path(sid): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = unchecked_form(&session, &form) {
        return refused;
    }
    match console
        .broker
        .revoke(
            &RevokeTarget::Session(sid),
            &Actor::approver(&session.approver),
            Console::now(),
        )
        .await
    {
        Ok(_) => Redirect::to("/console/sessions").into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    env: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    since: String,
}

pub struct FilterView {
    pub agent: String,
    pub env: String,
    pub kind: String,
    pub since: String,
    pub problem: Option<String>,
}

pub struct EventView {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub agent: String,
    pub env: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    filter: FilterView,
    events: Vec<EventView>,
    verification: String,
    intact: bool,
}

/// The newest events that match, at most this many.
const AUDIT_PAGE: i64 = 200;

pub async fn audit(
    axum::extract::State(console): State,
    SignedIn(session): SignedIn,
    Query(q): Query<AuditQuery>,
) -> Response {
    let now_ms = unix_ms(Console::now());
    let since = if q.since.trim().is_empty() {
        "24h"
    } else {
        q.since.trim()
    };
    let (since_ms, problem) = match crate::audit::parse_since(since, now_ms) {
        Ok(ms) => (ms, None),
        Err(e) => (
            now_ms - 24 * 3_600_000,
            Some(format!("`since`: {e}; showing the last 24 hours")),
        ),
    };
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let filter = crate::audit::Filter {
        agent: some(&q.agent),
        env: some(&q.env),
        kind: some(&q.kind),
        since_ms: Some(since_ms),
        after_seq: None,
        limit: AUDIT_PAGE,
        newest: true,
    };
    let records = match console.broker.store().search_audit(&filter).await {
        Ok(records) => records,
        Err(e) => return Problem::store(&e).into_response(),
    };
    let (verification, intact) = match console.broker.verify_audit().await {
        Ok(v) => (v.summary(), v.broken.is_none()),
        Err(e) => (format!("the chain could not be verified: {e}"), false),
    };
    let events = records
        .into_iter()
        .rev()
        .map(|r| EventView {
            seq: r.seq,
            at: rfc3339_ms(r.at_ms),
            kind: r.kind,
            actor: r.actor,
            agent: r.agent.unwrap_or_default(),
            env: r.env.unwrap_or_default(),
            detail: r.detail,
        })
        .collect();
    page(&AuditPage {
        chrome: Chrome::of(&session, "Audit trail", "audit"),
        filter: FilterView {
            agent: q.agent,
            env: q.env,
            kind: q.kind,
            since: since.to_owned(),
            problem,
        },
        events,
        verification,
        intact,
    })
}

pub struct FindingView {
    pub severity: &'static str,
    pub title: String,
    pub evidence: String,
    pub recommendation: String,
}

#[derive(Template)]
#[template(path = "console/report.html")]
struct ReportPage {
    chrome: Chrome,
    since: String,
    until: String,
    allowed: u64,
    refused: u64,
    findings: Vec<FindingView>,
}

/// The window of the console's report.
const REPORT_DAYS: i64 = 30;

pub async fn report(axum::extract::State(console): State, SignedIn(session): SignedIn) -> Response {
    let now = Console::now();
    let since_ms = unix_ms(now) - REPORT_DAYS * 86_400_000;
    let report = match console.broker.audit_report(since_ms, now).await {
        Ok(report) => report,
        Err(e) => return Problem::from(e).into_response(),
    };
    page(&ReportPage {
        chrome: Chrome::of(&session, "Permission report", "report"),
        since: report.since.clone(),
        until: report.until.clone(),
        allowed: report.allowed,
        refused: report.refused,
        findings: report
            .findings
            .into_iter()
            .map(|f| FindingView {
                severity: f.severity.as_str(),
                title: f.title,
                evidence: f.evidence,
                recommendation: f.recommendation,
            })
            .collect(),
    })
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/console.js"),
    )
        .into_response()
}

pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/console.css"),
    )
        .into_response()
}
