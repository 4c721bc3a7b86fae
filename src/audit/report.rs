//! Permission audits: what agents were granted against what they used and
//! attempted over a window, as findings with severity, evidence and the
//! configuration change to make. Pure: events, rules and store facts come in
//! as data; the renderers turn a `Report` into Markdown or one self-contained
//! HTML file (inline SVG, no external assets).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::{Record, Verification};
use crate::policy::Rules;

/// Secrets and signing keys older than this are due for rotation.
pub const ROTATION_DAYS: i64 = 90;
/// An agent that asked for this many approvals in the window often needs
/// what its grants do not give: they, or its instructions, may be wrong.
const OFTEN_ASKS: u64 = 3;
/// An approver whose every approval (of at least `OFTEN_ASKS`) came within
/// this long of the request may be approving without reading.
const QUICK_APPROVAL_MS: i64 = 30_000;
/// Grants that allow credentials to live longer than this are findings.
const LONG_TTL_SECS: u64 = 60 * 60;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name: `unused_scope`, `raw_provider_token`, …
    pub kind: &'static str,
    pub severity: Severity,
    pub title: String,
    pub evidence: String,
    pub recommendation: String,
}

/// Decisions of one agent on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// Unix ms at the start of the day (UTC).
    pub day_ms: i64,
    pub agent: String,
    pub allowed: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub since: String,
    pub until: String,
    pub events: usize,
    pub allowed: u64,
    pub refused: u64,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    pub decisions: Vec<DayCount>,
}

/// What the store knows beyond the events.
pub struct Facts<'a> {
    pub registered_agents: &'a [String],
    /// Stored secret → when it was last set (unix seconds).
    pub secrets: &'a [(String, i64)],
    /// Signing key id → when it was created (unix seconds), and whether it
    /// is the active one.
    pub signing_keys: &'a [(String, i64, bool)],
    pub verification: &'a Verification,
}

fn detail(r: &Record) -> Value {
    serde_json::from_str(&r.detail).unwrap_or(Value::Null)
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Builds the report for events in [since_ms, now_ms].
pub fn build(rules: &Rules, events: &[Record], facts: &Facts<'_>, since_ms: i64, now_ms: i64) -> Report {
    let window: Vec<&Record> = events
        .iter()
        .filter(|r| r.at_ms >= since_ms && r.at_ms <= now_ms)
        .collect();
    let mut findings = Vec::new();

    // Scopes used, per (agent, provider); agents that minted.
    let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut minted: BTreeSet<String> = BTreeSet::new();
    let mut days: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
    let (mut allowed, mut refused) = (0u64, 0u64);
    let mut destructive: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut mismatches: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut raw_tokens: BTreeSet<String> = BTreeSet::new();
    // Answers in which an upstream echoed a real token, by provider.
    let mut echoed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut shared: BTreeMap<String, u64> = BTreeMap::new();
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut reach: BTreeSet<String> = BTreeSet::new();
    let mut database: BTreeSet<(String, String)> = BTreeSet::new();
    // Approvals: when each was asked for, what each agent asked for, and how
    // long each approver took.
    let mut asked_at: BTreeMap<String, i64> = BTreeMap::new();
    let mut asked: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut approved_after: BTreeMap<String, Vec<i64>> = BTreeMap::new();

    for r in &window {
        let d = detail(r);
        let agent = r.agent.clone().unwrap_or_default();
        match r.kind.as_str() {
            "mint" => {
                minted.insert(agent);
            }
            "proxy_allowed" | "proxy_refused" => {
                let is_allowed = r.kind == "proxy_allowed";
                let day = r.at_ms - r.at_ms.rem_euclid(DAY_MS);
                let entry = days.entry((day, agent.clone())).or_default();
                if is_allowed {
                    allowed += 1;
                    entry.0 += 1;
                } else {
                    refused += 1;
                    entry.1 += 1;
                }
                let provider = d["provider"].as_str().unwrap_or_default().to_owned();
                for op in d["operations"].as_array().into_iter().flatten() {
                    if is_allowed && let Some(scope) = op["scope"].as_str() {
                        used.insert((agent.clone(), provider.clone(), scope.to_owned()));
                    }
                    for res in op["resources"].as_array().into_iter().flatten() {
                        let id = format!(
                            "{provider} {} `{}`",
                            res["kind"].as_str().unwrap_or("?"),
                            res["id"].as_str().unwrap_or("?")
                        );
                        match res["owners"].as_array() {
                            Some(owners) if owners.len() > 1 => *shared.entry(id).or_default() += 1,
                            Some(_) => {}
                            None => *unknown.entry(id).or_default() += 1,
                        }
                    }
                }
                if !is_allowed {
                    // Whatever the refusal said (approval, shared resource,
                    // mismatch), a destructive operation was attempted.
                    for op in d["operations"].as_array().into_iter().flatten() {
                        if matches!(op["tier"].as_str(), Some("destructive" | "catastrophic")) {
                            let name = op["name"].as_str().unwrap_or("?").to_owned();
                            *destructive.entry(agent.clone()).or_default().entry(name).or_default() += 1;
                        }
                    }
                }
                match d["refusal"].as_str() {
                    Some("credential_mismatch") => *mismatches.entry("credential_mismatch").or_default() += 1,
                    Some("shared_resource") => *mismatches.entry("shared_resource").or_default() += 1,
                    Some("unknown_resource") => *mismatches.entry("unknown_resource").or_default() += 1,
                    _ => {}
                }
            }
            "credential_refused" => match d["refusal"].as_str() {
                Some("raw_provider_token") => {
                    raw_tokens.insert(d["fingerprint"].as_str().unwrap_or("?").to_owned());
                }
                Some("credential_expired") => *mismatches.entry("credential_expired").or_default() += 1,
                Some("credential_revoked") => *mismatches.entry("credential_revoked").or_default() += 1,
                _ => {}
            },
            "upstream_credential_mismatch" => *mismatches.entry("upstream_credential_mismatch").or_default() += 1,
            "token_echoed" => {
                let fingerprints = echoed
                    .entry(d["provider"].as_str().unwrap_or("?").to_owned())
                    .or_default();
                for f in d["fingerprints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    fingerprints.insert(f.to_owned());
                }
            }
            "database_finding" => {
                database.insert((
                    format!(
                        "{} server for `{}`: {}",
                        d["provider"].as_str().unwrap_or("?"),
                        r.env.as_deref().unwrap_or("?"),
                        d["what"].as_str().unwrap_or("?")
                    ),
                    d["fix"].as_str().unwrap_or("?").to_owned(),
                ));
            }
            "approval_requested" => {
                asked_at.insert(d["approval_id"].as_str().unwrap_or_default().to_owned(), r.at_ms);
                let ops = asked.entry(agent).or_default();
                for name in d["operations"].as_array().into_iter().flatten() {
                    *ops.entry(name.as_str().unwrap_or("?").to_owned()).or_default() += 1;
                }
            }
            "approval_granted" => {
                if let Some(at) = asked_at.get(d["approval_id"].as_str().unwrap_or_default()) {
                    approved_after
                        .entry(d["approver"].as_str().unwrap_or("?").to_owned())
                        .or_default()
                        .push(r.at_ms - at);
                }
            }
            "token_reach_finding" => {
                reach.insert(format!(
                    "{} token for `{}` reaches {}",
                    d["provider"].as_str().unwrap_or("?"),
                    d["configured_for"].as_str().unwrap_or("?"),
                    d["reaches"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ));
            }
            _ => {}
        }
    }

    // Granted but unused scopes, and agents that never minted.
    for (agent, grants) in &rules.agents {
        if !minted.contains(agent) {
            findings.push(Finding {
                kind: "agent_never_minted",
                severity: Severity::Low,
                title: format!("agent `{agent}` did not mint a credential in the window"),
                evidence: "no `mint` event".into(),
                recommendation: format!(
                    "remove `[agents.{agent}]` (and `valetkey agent remove {agent}`) if it is no longer used"
                ),
            });
        }
        for grant in grants {
            let tiers = rules.scopes.get(&grant.provider);
            for scope in &grant.scopes {
                let holdable = tiers.and_then(|t| t.get(scope)).is_some_and(|t| t.agent_may_hold());
                if holdable && !used.contains(&(agent.clone(), grant.provider.clone(), scope.clone())) {
                    findings.push(Finding {
                        kind: "unused_scope",
                        severity: Severity::Medium,
                        title: format!(
                            "agent `{agent}` holds `{scope}` on `{}` and never used it",
                            grant.provider
                        ),
                        evidence: format!("0 allowed requests needing `{scope}` in the window"),
                        recommendation: format!(
                            "remove \"{scope}\" from the `{}` grant of `[agents.{agent}]`",
                            grant.provider
                        ),
                    });
                }
            }
            let ttl = grant.max_ttl.unwrap_or(rules.limits.max_ttl);
            if ttl.as_secs() > LONG_TTL_SECS {
                findings.push(Finding {
                    kind: "long_ttl",
                    severity: Severity::Low,
                    title: format!(
                        "agent `{agent}`'s `{}` credentials may live {}",
                        grant.provider,
                        humantime::format_duration(ttl)
                    ),
                    evidence: format!("grant max_ttl {}", humantime::format_duration(ttl)),
                    recommendation: format!(
                        "set `max_ttl = \"1h\"` or less on the `{}` grant of `[agents.{agent}]`",
                        grant.provider
                    ),
                });
            }
        }
    }
    for (agent, ops) in &destructive {
        let list: Vec<String> = ops.iter().map(|(op, n)| format!("{op} ×{n}")).collect();
        findings.push(Finding {
            kind: "destructive_attempts",
            severity: Severity::High,
            title: format!("agent `{agent}` attempted destructive or catastrophic operations"),
            evidence: list.join(", "),
            recommendation: format!("review with its owner what `{agent}` was doing; its instructions should make it check first (docs/AGENTS.md)"),
        });
    }
    for (agent, ops) in &asked {
        let n: u64 = ops.values().sum();
        let list: Vec<String> = ops.iter().map(|(op, n)| format!("{op} ×{n}")).collect();
        let often = n >= OFTEN_ASKS;
        findings.push(Finding {
            kind: "approvals_asked",
            severity: if often { Severity::Medium } else { Severity::Info },
            title: format!("agent `{agent}` asked for {}", plural(n, "approval")),
            evidence: list.join(", "),
            recommendation: if often {
                format!("`{agent}` often needs what no credential holds: review its task and instructions with its owner, and whether the resources it changes should be its environment's own")
            } else {
                "none: approvals are how destructive work is meant to happen".into()
            },
        });
    }
    for (approver, after) in &approved_after {
        if after.len() as u64 >= OFTEN_ASKS && after.iter().all(|ms| *ms < QUICK_APPROVAL_MS) {
            findings.push(Finding {
                kind: "quick_approver",
                severity: Severity::Medium,
                title: format!(
                    "approver `{approver}` approved every request within {} seconds",
                    QUICK_APPROVAL_MS / 1000
                ),
                evidence: format!(
                    "{} approved, the slowest {} s after it was asked for",
                    after.len(),
                    after.iter().max().copied().unwrap_or(0) / 1000
                ),
                recommendation: format!("make sure `{approver}` reads the blast radius before approving; an approval that is always given guards nothing"),
            });
        }
    }
    for (kind, n) in &mismatches {
        let (severity, recommendation) = match *kind {
            "upstream_credential_mismatch" => (
                Severity::High,
                "fix the real token configured for that provider and environment",
            ),
            "shared_resource" => (
                Severity::High,
                "give each environment its own resource, or keep agents off it",
            ),
            "credential_mismatch" => (
                Severity::Medium,
                "find out why agents aim at other environments' resources",
            ),
            "unknown_resource" => (
                Severity::Medium,
                "add the ids agents need to `[[resources]]` with their environment",
            ),
            _ => (
                Severity::Low,
                "check that launchers run `valetkey run` for the whole task",
            ),
        };
        findings.push(Finding {
            kind: "mismatches",
            severity,
            title: format!("{} {kind}", plural(*n, "refusal")),
            evidence: format!("{n} `{kind}` event(s) in the window"),
            recommendation: recommendation.into(),
        });
    }
    if !raw_tokens.is_empty() {
        findings.push(Finding {
            kind: "raw_provider_token",
            severity: Severity::Critical,
            title: format!(
                "{} reached agents",
                plural(raw_tokens.len() as u64, "real provider token")
            ),
            evidence: format!(
                "fingerprints: {}",
                raw_tokens.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            recommendation: "rotate these tokens at the provider, and find how agents got them".into(),
        });
    }
    for (provider, fingerprints) in &echoed {
        findings.push(Finding {
            kind: "token_echoed",
            severity: Severity::High,
            title: format!("provider `{provider}` echoed a real token in its answers"),
            evidence: format!(
                "fingerprints: {}",
                fingerprints.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            recommendation: "the broker overwrote the token before agents saw it; find the endpoint that reflects credentials (a debug route, an error page) and consider rotating the token".into(),
        });
    }
    for (id, n) in &shared {
        findings.push(Finding {
            kind: "shared_resource_touched",
            severity: Severity::Medium,
            title: format!("shared resource {id} was touched"),
            evidence: format!("{} naming it", plural(*n, "request")),
            recommendation: "give each environment its own resource where the provider allows it".into(),
        });
    }
    for (id, n) in &unknown {
        findings.push(Finding {
            kind: "unknown_resource_touched",
            severity: Severity::Medium,
            title: format!("unknown resource {id} was touched"),
            evidence: format!("{} naming it", plural(*n, "request")),
            recommendation: "add it to `[[resources]]` with the environment that owns it".into(),
        });
    }
    for (title, fix) in &database {
        findings.push(Finding {
            kind: "database_exposure",
            severity: Severity::High,
            title: title.clone(),
            evidence: "the broker's check of the database server".into(),
            recommendation: fix.clone(),
        });
    }
    for line in &reach {
        findings.push(Finding {
            kind: "token_reach",
            severity: Severity::High,
            title: line.clone(),
            evidence: "upstream token introspection".into(),
            recommendation: "give that environment a token confined to it".into(),
        });
    }
    let now_secs = now_ms / 1000;
    for (name, set_at) in facts.secrets {
        let age = (now_secs - set_at) / 86_400;
        if age > ROTATION_DAYS {
            findings.push(Finding {
                kind: "stale_secret",
                severity: Severity::Low,
                title: format!("stored secret `{name}` is {age} days old"),
                evidence: format!("last set {}", crate::time::rfc3339(*set_at)),
                recommendation: format!("rotate it at the provider, then `valetkey secret set {name}`"),
            });
        }
    }
    for (kid, created, active) in facts.signing_keys {
        let age = (now_secs - created) / 86_400;
        if *active && age > ROTATION_DAYS {
            findings.push(Finding {
                kind: "signing_key_due",
                severity: Severity::Low,
                title: format!("signing key `{kid}` is {age} days old"),
                evidence: format!("created {}", crate::time::rfc3339(*created)),
                recommendation: "`valetkey keys rotate`".into(),
            });
        }
    }
    findings.push(match &facts.verification.broken {
        Some(broken) => Finding {
            kind: "chain_integrity",
            severity: Severity::Critical,
            title: format!("the audit chain is broken at event {}", broken.seq()),
            evidence: broken.to_string(),
            recommendation: "restore the store from a backup and find who wrote to it".into(),
        },
        None => Finding {
            kind: "chain_integrity",
            severity: Severity::Info,
            title: "the audit chain is intact".into(),
            evidence: format!(
                "{} events, {} checkpoints verified",
                facts.verification.events, facts.verification.checkpoints
            ),
            recommendation: "nothing to do".into(),
        },
    });
    for agent in facts.registered_agents {
        if !rules.agents.contains_key(agent) {
            findings.push(Finding {
                kind: "agent_not_configured",
                severity: Severity::Low,
                title: format!("agent `{agent}` has a launcher key but no configuration"),
                evidence: "registered in the store, absent from `[agents]`".into(),
                recommendation: format!("`valetkey agent remove {agent}`"),
            });
        }
    }
    findings.sort_by(|a, b| a.severity.cmp(&b.severity).then_with(|| a.title.cmp(&b.title)));
    Report {
        generated_at: crate::time::rfc3339(now_secs),
        since: crate::time::rfc3339(since_ms / 1000),
        until: crate::time::rfc3339(now_secs),
        events: window.len(),
        allowed,
        refused,
        findings,
        decisions: days
            .into_iter()
            .map(|((day_ms, agent), (allowed, refused))| DayCount {
                day_ms,
                agent,
                allowed,
                refused,
            })
            .collect(),
    }
}

fn counts(report: &Report) -> BTreeMap<Severity, usize> {
    let mut by = BTreeMap::new();
    for f in &report.findings {
        *by.entry(f.severity).or_insert(0) += 1;
    }
    by
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# valetkey permission audit\n");
    let _ = writeln!(
        out,
        "Window: {} to {} (generated {}).\n",
        report.since, report.until, report.generated_at
    );
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "- {} events; {} proxied requests allowed, {} refused",
        report.events, report.allowed, report.refused
    );
    for (severity, n) in counts(report) {
        let _ = writeln!(out, "- {n} {} finding(s)", severity.as_str());
    }
    let _ = writeln!(out, "\n## Findings\n");
    for f in &report.findings {
        let _ = writeln!(out, "### [{}] {}\n", f.severity.as_str(), f.title);
        let _ = writeln!(out, "- kind: `{}`", f.kind);
        let _ = writeln!(out, "- evidence: {}", f.evidence);
        let _ = writeln!(out, "- recommendation: {}\n", f.recommendation);
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One self-contained HTML file: summary, findings by severity, and a chart
/// of decisions per day per agent as inline SVG.
pub fn html(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>valetkey permission audit</title>\n",
    );
    out.push_str(
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}",
    );
    out.push_str(".f{border-left:6px solid #999;padding:.3rem .8rem;margin:.8rem 0;background:#fafafa}");
    out.push_str(".critical{border-color:#b00020}.high{border-color:#e65100}.medium{border-color:#f9a825}.low{border-color:#1565c0}.info{border-color:#2e7d32}");
    out.push_str("table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}</style></head><body>\n");
    let _ = writeln!(out, "<h1>valetkey permission audit</h1>");
    let _ = writeln!(
        out,
        "<section id=\"summary\"><h2>Summary</h2><p>Window {} to {} (generated {}).</p><table>",
        escape(&report.since),
        escape(&report.until),
        escape(&report.generated_at)
    );
    let _ = writeln!(out, "<tr><th>events</th><td>{}</td></tr>", report.events);
    let _ = writeln!(out, "<tr><th>requests allowed</th><td>{}</td></tr>", report.allowed);
    let _ = writeln!(out, "<tr><th>requests refused</th><td>{}</td></tr>", report.refused);
    for (severity, n) in counts(report) {
        let _ = writeln!(out, "<tr><th>{} findings</th><td>{n}</td></tr>", severity.as_str());
    }
    out.push_str("</table></section>\n<section id=\"chart\"><h2>Decisions per day</h2>\n");
    out.push_str(&chart(report));
    out.push_str("</section>\n<section id=\"findings\"><h2>Findings</h2>\n");
    for f in &report.findings {
        let _ = writeln!(
            out,
            "<div class=\"f {sev}\"><strong>[{sev}] {}</strong><br><code>{}</code><br>Evidence: {}<br>Recommendation: {}</div>",
            escape(&f.title),
            escape(f.kind),
            escape(&f.evidence),
            escape(&f.recommendation),
            sev = f.severity.as_str()
        );
    }
    out.push_str("</section>\n</body></html>\n");
    out
}

/// Allowed (green) and refused (red) bars per day, one row per agent.
fn chart(report: &Report) -> String {
    let agents: BTreeSet<&str> = report.decisions.iter().map(|d| d.agent.as_str()).collect();
    let days: BTreeSet<i64> = report.decisions.iter().map(|d| d.day_ms).collect();
    if agents.is_empty() {
        return "<p>No proxied requests in the window.</p>\n".into();
    }
    let max = report
        .decisions
        .iter()
        .map(|d| d.allowed.max(d.refused))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (row_h, label_w, bar_w) = (90.0, 110.0, 10.0);
    let width = label_w + days.len() as f64 * (2.0 * bar_w + 6.0) + 10.0;
    let height = agents.len() as f64 * row_h + 20.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"decisions per day per agent\">\n"
    );
    for (row, agent) in agents.iter().enumerate() {
        let base = (row as f64 + 1.0) * row_h;
        let _ = writeln!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text><line x1=\"{label_w}\" y1=\"{base}\" x2=\"{width}\" y2=\"{base}\" stroke=\"#ccc\"/>",
            base - 4.0,
            escape(agent)
        );
        for (col, day) in days.iter().enumerate() {
            let Some(d) = report.decisions.iter().find(|d| d.day_ms == *day && d.agent == *agent) else {
                continue;
            };
            let x = label_w + col as f64 * (2.0 * bar_w + 6.0);
            for (i, (n, color)) in [(d.allowed, "#2e7d32"), (d.refused, "#b00020")].into_iter().enumerate() {
                let h = (n as f64 / max) * (row_h - 20.0);
                let _ = writeln!(
                    svg,
                    "<rect x=\"{}\" y=\"{}\" width=\"{bar_w}\" height=\"{h}\" fill=\"{color}\"><title>{} {}: {n} {}</title></rect>",
                    x + i as f64 * bar_w,
                    base - h,
                    escape(agent),
                    crate::time::rfc3339(day / 1000).split('T').next().unwrap_or_default(),
                    if i == 0 { "allowed" } else { "refused" }
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::audit::{Event, EventKind, GENESIS};
    use crate::policy::{Grant, Tier};

    const NOW: i64 = 1_800_000_000_000;

    fn rules() -> Rules {
        let railway: BTreeMap<String, Tier> = [
            ("read", Tier::Read),
            ("variable:write", Tier::Write),
            ("deployment:deploy", Tier::Deploy),
            ("volume:delete", Tier::Destructive),
        ]
        .into_iter()
        .map(|(s, t)| (s.to_owned(), t))
        .collect();
        let grant = |scopes: &[&str], max: Option<u64>| Grant {
            provider: "railway".into(),
            environments: vec!["staging".into()],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            max_ttl: max.map(|m| Duration::from_secs(m * 60)),
        };
        Rules {
            scopes: [("railway".to_owned(), railway)].into(),
            agents: [
                (
                    "coder".to_owned(),
                    vec![grant(&["read", "variable:write", "deployment:deploy"], Some(30))],
                ),
                ("idle".to_owned(), vec![grant(&["read"], Some(240))]),
            ]
            .into(),
            ..Rules::default()
        }
    }

    /// A month of `coder`'s work: it reads and sets variables, never
    /// deploys, tries to delete a shared volume twice, aims at production
    /// once, and someone hands it a GitHub PAT.
    fn month() -> Vec<Record> {
        let mut events = Vec::new();
        let mut at = |day: i64, kind: EventKind, detail: serde_json::Value| {
            events.push(Event {
                kind,
                actor: "agent:coder".into(),
                agent: Some("coder".into()),
                session_id: None,
                env: Some("staging".into()),
                detail,
            });
            NOW - day * DAY_MS
        };
        let op = |name: &str, scope: &str, id: &str, owners: serde_json::Value, refused: Option<&str>| {
            let tier = if scope == "volume:delete" {
                "destructive"
            } else {
                "read"
            };
            json!({ "name": name, "scope": scope, "tier": tier, "resources": [{ "kind": "volume", "id": id, "owners": owners }], "refused": refused })
        };
        let mut times = Vec::new();
        for day in (1..29).step_by(3) {
            times.push(at(day, EventKind::Mint, json!({})));
            times.push(at(day, EventKind::ProxyAllowed, json!({ "provider": "railway", "operations": [op("query volume", "read", "vol_stg", json!(["staging"]), None)] })));
        }
        times.push(at(5, EventKind::ProxyAllowed, json!({ "provider": "railway", "operations": [op("mutation variableUpsert", "variable:write", "vol_stg", json!(["staging"]), None)] })));
        for day in [3, 4] {
            times.push(at(day, EventKind::ProxyRefused, json!({ "provider": "railway", "refusal": "shared_resource", "operations": [op("mutation volumeDelete", "volume:delete", "vol_db", json!(["staging", "production"]), Some("shared_resource"))] })));
        }
        times.push(at(2, EventKind::ProxyRefused, json!({ "provider": "railway", "refusal": "approval_required", "operations": [op("mutation volumeDelete", "volume:delete", "vol_stg", json!(["staging"]), Some("approval_required"))] })));
        times.push(at(6, EventKind::ProxyRefused, json!({ "provider": "railway", "refusal": "credential_mismatch", "operations": [op("query volume", "read", "vol_prod", json!(["production"]), Some("credential_mismatch"))] })));
        times.push(at(7, EventKind::ProxyRefused, json!({ "provider": "railway", "refusal": "unknown_resource", "operations": [op("query volume", "read", "vol_new", serde_json::Value::Null, Some("unknown_resource"))] })));
        times.push(at(
            8,
            EventKind::CredentialRefused,
            json!({ "refusal": "raw_provider_token", "fingerprint": "hmac-sha256:abc" }),
        ));
        times.push(at(
            9,
            EventKind::TokenEchoed,
            json!({ "provider": "api", "fingerprints": ["hmac-sha256:def"] }),
        ));
        // Three approvals asked for; `quick` approves each within seconds,
        // `careful` one after five minutes.
        for (i, day) in [10, 11, 12].into_iter().enumerate() {
            let id = format!("a{i}");
            let asked = at(
                day,
                EventKind::ApprovalRequested,
                json!({ "approval_id": id, "operations": ["mutation volumeDelete"] }),
            );
            times.push(asked);
            times.push(
                at(
                    day,
                    EventKind::ApprovalGranted,
                    json!({ "approval_id": id, "approver": "quick" }),
                ) + 4_000,
            );
            if i == 0 {
                times.push(
                    at(
                        day,
                        EventKind::ApprovalGranted,
                        json!({ "approval_id": id, "approver": "careful" }),
                    ) + 300_000,
                );
            }
        }
        // Before the window: must not count.
        times.push(at(45, EventKind::ProxyAllowed, json!({ "provider": "railway", "operations": [op("mutation deploymentRedeploy", "deployment:deploy", "vol_stg", json!(["staging"]), None)] })));
        let mut prev = GENESIS.to_owned();
        events
            .iter()
            .zip(times)
            .enumerate()
            .map(|(i, (e, t))| {
                let r = Record::new(i as i64 + 1, format!("e{i}"), t, e, &prev);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn report() -> Report {
        let verification = crate::audit::verify(&month(), &[], |_| true);
        let facts = Facts {
            registered_agents: &["coder".to_owned(), "ghost".to_owned()],
            secrets: &[
                ("railway-staging".to_owned(), (NOW / 1000) - 200 * 86_400),
                ("fresh".to_owned(), NOW / 1000 - 86_400),
            ],
            signing_keys: &[("k1".to_owned(), (NOW / 1000) - 10 * 86_400, true)],
            verification: &verification,
        };
        build(&rules(), &month(), &facts, NOW - 30 * DAY_MS, NOW)
    }

    #[test]
    fn a_scripted_month_yields_exactly_the_expected_findings() {
        let r = report();
        let got: Vec<(&str, Severity, &str)> = r
            .findings
            .iter()
            .map(|f| (f.kind, f.severity, f.title.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "raw_provider_token",
                    Severity::Critical,
                    "1 real provider token reached agents"
                ),
                ("mismatches", Severity::High, "2 refusals shared_resource"),
                (
                    "destructive_attempts",
                    Severity::High,
                    "agent `coder` attempted destructive or catastrophic operations"
                ),
                (
                    "token_echoed",
                    Severity::High,
                    "provider `api` echoed a real token in its answers"
                ),
                ("mismatches", Severity::Medium, "1 refusal credential_mismatch"),
                ("mismatches", Severity::Medium, "1 refusal unknown_resource"),
                (
                    "approvals_asked",
                    Severity::Medium,
                    "agent `coder` asked for 3 approvals"
                ),
                (
                    "unused_scope",
                    Severity::Medium,
                    "agent `coder` holds `deployment:deploy` on `railway` and never used it"
                ),
                (
                    "unused_scope",
                    Severity::Medium,
                    "agent `idle` holds `read` on `railway` and never used it"
                ),
                (
                    "quick_approver",
                    Severity::Medium,
                    "approver `quick` approved every request within 30 seconds"
                ),
                (
                    "shared_resource_touched",
                    Severity::Medium,
                    "shared resource railway volume `vol_db` was touched"
                ),
                (
                    "unknown_resource_touched",
                    Severity::Medium,
                    "unknown resource railway volume `vol_new` was touched"
                ),
                (
                    "agent_not_configured",
                    Severity::Low,
                    "agent `ghost` has a launcher key but no configuration"
                ),
                (
                    "agent_never_minted",
                    Severity::Low,
                    "agent `idle` did not mint a credential in the window"
                ),
                (
                    "long_ttl",
                    Severity::Low,
                    "agent `idle`'s `railway` credentials may live 4h"
                ),
                (
                    "stale_secret",
                    Severity::Low,
                    "stored secret `railway-staging` is 200 days old"
                ),
                ("chain_integrity", Severity::Info, "the audit chain is intact"),
            ]
        );
        assert_eq!((r.allowed, r.refused), (11, 5));
        let destructive = r.findings.iter().find(|f| f.kind == "destructive_attempts").unwrap();
        assert_eq!(destructive.evidence, "mutation volumeDelete ×3");
        assert!(
            r.findings
                .iter()
                .find(|f| f.title.contains("deployment:deploy"))
                .unwrap()
                .recommendation
                .contains("remove \"deployment:deploy\" from the `railway` grant of `[agents.coder]`")
        );
    }

    #[test]
    fn markdown_and_html_carry_the_summary_and_every_finding() {
        let r = report();
        let md = markdown(&r);
        let page = html(&r);
        for f in &r.findings {
            assert!(md.contains(&f.title), "markdown lacks {}", f.title);
            assert!(page.contains(&escape(&f.title)), "html lacks {}", f.title);
        }
        assert!(md.contains("## Summary") && md.contains("11 proxied requests allowed, 5 refused"));
        assert!(page.starts_with("<!doctype html>") && page.contains("id=\"summary\"") && page.contains("<svg"));
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "the page loads nothing"
        );
        assert_eq!(page.matches("<rect").count(), 2 * r.decisions.len());
    }
}
