//! The MCP server: an agent's questions to the broker (who am I, would
//! this be allowed, why was that refused, may a human approve this) as
//! tools an LLM client calls, and the agents' instructions
//! (docs/AGENTS.md) as a resource.
//!
//! One tool set, two transports. Each tool asks an [`Ask`]: `valetkey mcp`
//! (stdio, `cli::mcp`) asks the broker's HTTP API with the credential
//! `valetkey run` put in its environment; `/mcp` on the broker ([`http`])
//! asks in-process with the claims of each HTTP request's credential. Both
//! end in `api::agent`, so a tool answers what the HTTP API answers: its
//! JSON, or its problem+json as the tool's error.

pub mod http;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Extensions, Implementation, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the broker answered: its JSON, or its problem+json.
pub type Answer = Result<Value, Value>;

/// The broker, as the tools ask it. `context` is the MCP request's
/// extensions (over HTTP, the request's parts with its claims).
#[async_trait::async_trait]
pub trait Ask: Send + Sync + 'static {
    async fn whoami(&self, context: &Extensions) -> Answer;
    /// `request` is `/v1/check`'s body.
    async fn check(&self, context: &Extensions, request: Value) -> Answer;
    async fn explain(&self, context: &Extensions, event_id: &str) -> Answer;
    /// `request` is `/v1/check`'s body.
    async fn request_approval(&self, context: &Extensions, request: Value) -> Answer;
    async fn approval(&self, context: &Extensions, id: &str, wait: Duration) -> Answer;
}

/// The longest an `approval_status` call waits: MCP clients give up on a
/// tool call after about a minute.
pub const MAX_WAIT: Duration = Duration::from_secs(50);

/// The agents' instructions, as the resource serves them: the part of
/// docs/AGENTS.md written for the agent.
pub fn instructions() -> &'static str {
    const DOC: &str = include_str!("../../docs/AGENTS.md");
    DOC.split_once("\n---\n").map_or(DOC, |(_, agent)| agent.trim_start())
}

pub const INSTRUCTIONS_URI: &str = "valetkey://docs/AGENTS.md";

/// A request described for `check` and `request_approval`.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct RequestParams {
    /// The provider, as in its proxy URL and `whoami`'s grants (`railway`,
    /// `github`, …).
    provider: String,
    /// A GraphQL request, for a GraphQL provider (Railway). Leave out
    /// `method`, `path`, `headers` and `body` then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graphql: Option<GraphqlParams>,
    /// The HTTP method (REST providers such as GitHub), with `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    /// The path after the provider's proxy URL, query string included
    /// (`/repos/OWNER/REPO/pulls?state=open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// The headers your HTTP client will send, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    /// The request body, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct GraphqlParams {
    /// The GraphQL document.
    query: String,
    /// The variables, as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variables: Option<Value>,
    /// The operation to run, when the document holds several.
    #[serde(default, rename = "operationName", skip_serializing_if = "Option::is_none")]
    operation_name: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EventParams {
    /// The `event_id` of the refusal you received.
    event_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ApprovalParams {
    /// The approval id (`approval_id` of the refusal or of request_approval's answer).
    approval_id: String,
    /// How long to wait while it is pending, in seconds (at most 50; 0
    /// answers at once).
    #[serde(default)]
    wait_seconds: Option<u64>,
}

/// The MCP server over either transport.
#[derive(Clone)]
pub struct Server {
    ask: Arc<dyn Ask>,
    #[allow(dead_code, reason = "read by the code #[tool_handler] generates")]
    tool_router: ToolRouter<Server>,
}

fn result(answer: Answer) -> CallToolResult {
    match answer {
        Ok(value) => CallToolResult::structured(value),
        Err(problem) => CallToolResult::structured_error(problem),
    }
}

fn body(request: &RequestParams) -> Value {
    serde_json::to_value(request).unwrap_or(Value::Null)
}

#[tool_router]
impl Server {
    pub fn new(ask: Arc<dyn Ask>) -> Server {
        Server {
            ask,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Who you are to valetkey, the broker that holds the real provider tokens: your agent name, the one environment your credential is for, each provider you may reach through the broker's proxy (its proxy URL) with your scopes and their tiers (read, write, deploy), when your credential expires, and what is never possible with it. Call this before using a provider."
    )]
    async fn whoami(&self, context: Extensions) -> CallToolResult {
        result(self.ask.whoami(&context).await)
    }

    #[tool(
        description = "Ask whether valetkey's proxy would allow a request, before you send it: nothing is sent and nothing is recorded (but a provider's own token in its query string, refused as leaked, as the proxy refuses it). Describe either a GraphQL request (`graphql`: `query`, `variables`, `operationName`; for GraphQL providers such as railway) or an HTTP request (`method`, `path` under the provider's proxy URL with its query string, optional `headers` and `body`). Answers the operations the request performs, the resources each touches and the environments that own them, the `decision` (`allow` or `refuse`), and when refused, `refusal`: the answer the proxy would give, whose `detail` says why and `agent_guidance` what to do. Check first before anything that changes or deletes something. When `refusal.approvable` is present, a human may approve exactly this request: call request_approval."
    )]
    async fn check(&self, context: Extensions, Parameters(request): Parameters<RequestParams>) -> CallToolResult {
        result(self.ask.check(&context, body(&request)).await)
    }

    #[tool(
        description = "Explain a refusal you received from valetkey: pass the `event_id` it carried. Answers what was refused (`what`, `operations`), why (`why`, `refusal`), and what to do next (`next_step`). Only your own session's events can be read."
    )]
    async fn explain_refusal(
        &self,
        context: Extensions,
        Parameters(EventParams { event_id }): Parameters<EventParams>,
    ) -> CallToolResult {
        result(self.ask.explain(&context, &event_id).await)
    }

    #[tool(
        description = "Ask a human to approve a request valetkey refuses only for its danger (a destructive operation, or a change to a resource other environments share), before you send it. Describe it as for `check`. The approval covers exactly one request, sent once from this session. The answer is `check`'s, with the refusal recorded: `refusal.approval_id` names the held request, and `send_once_approved` is exactly the request the approval covers (`method`, `path` with its query string, `url`, `headers`, and `body` as text; a GraphQL request's body is the broker's own JSON of it, not yours). Wait for it with approval_status, then send exactly that once, with the header `Valetkey-Approval: <approval_id>`: the same body bytes and no other headers but Host, Content-Length, Accept-Encoding and your credential (curl, for one, adds User-Agent and Accept unless told not to). If `refusal.approval_unavailable` is there instead, no approval can be given as the broker is configured (no approvers for it, or too few): do not retry or work around it; ask a human to do it themselves, quoting `refusal.event_id`. If `decision` is `allow`, nothing needs approving: send the request. A refusal without either cannot be approved at all: follow its `agent_guidance`."
    )]
    async fn request_approval(
        &self,
        context: Extensions,
        Parameters(request): Parameters<RequestParams>,
    ) -> CallToolResult {
        result(self.ask.request_approval(&context, body(&request)).await)
    }

    #[tool(
        description = "Where a human's approval of your held request stands: `pending`, `approved`, `denied` (with the approver's `reason`), `expired` or `used`. Waits while it is pending, up to `wait_seconds` (at most 50). Once `approved`, send exactly the request request_approval's answer gave as `send_once_approved`, once, with the header `Valetkey-Approval: <approval_id>`. If it is denied or expired, stop and tell a human what you were doing, quoting the approval id."
    )]
    async fn approval_status(
        &self,
        context: Extensions,
        Parameters(ApprovalParams {
            approval_id,
            wait_seconds,
        }): Parameters<ApprovalParams>,
    ) -> CallToolResult {
        let wait = Duration::from_secs(wait_seconds.unwrap_or(0)).min(MAX_WAIT);
        result(self.ask.approval(&context, &approval_id, wait).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("valetkey", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "valetkey holds the real provider tokens; you reach providers only through its proxy, with the credential it gave you. Call whoami first; check before anything that changes or deletes something; explain_refusal with a refusal's event_id; request_approval and approval_status when a human may approve. The rules are in the resource {INSTRUCTIONS_URI}."
            ))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resource = Resource::new(INSTRUCTIONS_URI, "agent-instructions")
            .with_title("Instructions for agents that work through valetkey")
            .with_description("How to reach providers through valetkey, what is refused and what to do then. Read it before your first request.")
            .with_mime_type("text/markdown");
        Ok(ListResourcesResult::with_all_items(vec![resource]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != INSTRUCTIONS_URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "there is no resource `{}`; the one resource is {INSTRUCTIONS_URI}",
                    request.uri
                ),
                None,
            ));
        }
        let contents = ResourceContents::TextResourceContents {
            uri: INSTRUCTIONS_URI.to_owned(),
            mime_type: Some("text/markdown".to_owned()),
            text: instructions().to_owned(),
            meta: None,
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}
