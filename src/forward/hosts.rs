//! Where a forward-proxy request may go (pure): a provider's host, whose
//! requests the broker inspects; a passthrough host, tunnelled uninspected;
//! or nowhere. A provider's host is inspected whatever else matches it, so
//! no passthrough entry can open an uninspected tunnel to it.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::providers::ProviderKind;

/// Where a CONNECT or an absolute-form request is headed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A provider's host: TLS terminated with the broker's CA, each request
    /// judged as on `/p/{provider}`. Several providers may share a host;
    /// the credential says which one it is for.
    Inspect(Vec<String>),
    /// Listed in `[forward_proxy] passthrough`: tunnelled uninspected.
    Tunnel,
    /// Neither: refused.
    Unlisted,
}

/// A passthrough entry: a host, or every subdomain of one (`*.pypi.org`),
/// and a port (443 unless named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    suffix: bool,
    host: String,
    port: u16,
}

impl Pattern {
    /// Reads one `passthrough` entry; why it is not one otherwise.
    pub fn parse(entry: &str) -> Result<Pattern, String> {
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{port}` is not a port"))?,
            ),
            None => (entry, 443),
        };
        let (suffix, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let name = normalize(name);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        // A wildcard needs a registrable name under it: `*.com` would let
        // a tunnel reach half the internet.
        if !valid || (suffix && !name.contains('.')) {
            return Err(format!(
                "`{entry}` is not a host name, `*.` and a domain, optionally with `:PORT`"
            ));
        }
        Ok(Pattern {
            suffix,
            host: name,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        port == self.port
            && if self.suffix {
                host.strip_suffix(&self.host).is_some_and(|head| head.ends_with('.'))
            } else {
                host == self.host
            }
    }

    /// Whether the entry would cover `host` on some port.
    pub fn covers_host(&self, host: &str) -> bool {
        self.matches(host, self.port)
    }
}

/// Whether `entry` is a bare host name or IP address (as ops' `hosts` must
/// be: no scheme, port, path or wildcard), so that it is compared as the
/// host a client names.
pub fn is_host_name(entry: &str) -> bool {
    if entry.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !entry.contains([':', '*']) && Pattern::parse(entry).is_ok()
}

/// A host as compared: lower case, without a trailing dot or IPv6 brackets.
pub fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The hosts the forward proxy knows, built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    providers: BTreeMap<String, Vec<String>>,
    passthrough: Vec<Pattern>,
}

impl Hosts {
    /// Every provider's hosts (postgres providers have none) and the
    /// passthrough entries that parse (`config check` names the others).
    pub fn from_config(config: &Config) -> Hosts {
        let mut providers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, provider) in &config.providers {
            let provider = provider.get_ref();
            if provider.kind == ProviderKind::Postgres {
                continue;
            }
            for host in provider.forward_hosts() {
                providers.entry(normalize(&host)).or_default().push(name.clone());
            }
        }
        let passthrough = config
            .forward_proxy
            .passthrough
            .iter()
            .filter_map(|entry| Pattern::parse(entry).ok())
            .collect();
        Hosts { providers, passthrough }
    }

    pub fn destination(&self, host: &str, port: u16) -> Destination {
        let host = normalize(host);
        if let Some(providers) = self.providers.get(&host) {
            return Destination::Inspect(providers.clone());
        }
        if self.passthrough.iter().any(|p| p.matches(&host, port)) {
            return Destination::Tunnel;
        }
        Destination::Unlisted
    }

    /// Every provider host, for messages and `NO_PROXY`'s complement.
    pub fn provider_hosts(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }
}

/// Which of a host's providers a credential is for: the one it holds
/// grants of, when exactly one.
pub fn pick(candidates: &[String], held: impl Fn(&str) -> bool) -> Result<&str, Vec<&str>> {
    let held: Vec<&str> = candidates.iter().map(String::as_str).filter(|p| held(p)).collect();
    match held.as_slice() {
        [one] => Ok(one),
        _ => Err(held),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(passthrough: &[&str]) -> Hosts {
        let mut providers = BTreeMap::new();
        providers.insert("api.github.com".to_owned(), vec!["github".to_owned()]);
        providers.insert("github.com".to_owned(), vec!["github".to_owned()]);
        Hosts {
            providers,
            passthrough: passthrough.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
        }
    }

    #[test]
    fn a_provider_host_is_inspected_however_it_is_spelled_and_whatever_passthrough_says() {
        let h = hosts(&["*.github.com", "github.com"]);
        for spelling in ["api.github.com", "API.GitHub.com", "api.github.com.", "github.com"] {
            for port in [443, 80, 8443] {
                assert_eq!(
                    h.destination(spelling, port),
                    Destination::Inspect(vec!["github".into()]),
                    "{spelling}:{port}"
                );
            }
        }
        assert_eq!(h.destination("uploads.github.com", 443), Destination::Tunnel);
    }

    #[test]
    fn passthrough_matches_its_host_and_port_only() {
        let h = hosts(&["registry.npmjs.org", "*.pypi.org", "mirror.example:8443"]);
        assert_eq!(h.destination("registry.npmjs.org", 443), Destination::Tunnel);
        assert_eq!(h.destination("registry.npmjs.org", 80), Destination::Unlisted);
        assert_eq!(h.destination("files.pypi.org", 443), Destination::Tunnel);
        assert_eq!(h.destination("pypi.org", 443), Destination::Unlisted);
        assert_eq!(h.destination("evilpypi.org", 443), Destination::Unlisted);
        assert_eq!(
            h.destination("registry.npmjs.org.evil.example", 443),
            Destination::Unlisted
        );
        assert_eq!(h.destination("mirror.example", 8443), Destination::Tunnel);
        assert_eq!(h.destination("mirror.example", 443), Destination::Unlisted);
        assert_eq!(h.destination("example.com", 443), Destination::Unlisted);
    }

    #[test]
    fn passthrough_entries_that_are_not_hosts_are_refused() {
        for bad in [
            "*",
            "*.com",
            "",
            "a..b",
            "host:0",
            "host:http",
            "a/b",
            "ex ample.com",
            "*.*.example.com",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        assert!(Pattern::parse("Registry.NPMJS.org:443").is_ok());
    }

    #[test]
    fn ops_hosts_are_bare_host_names() {
        for good in ["api.github.com", "GHE.internal", "127.0.0.1", "::1", "[::1]"] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in [
            "https://api.github.com/",
            "github.com:443",
            "*.github.com",
            "",
            "a/b",
            "api.github.com/x",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_credential_picks_the_one_provider_it_holds_at_a_host() {
        let candidates = vec!["github".to_owned(), "github-bot".to_owned()];
        assert_eq!(pick(&candidates, |p| p == "github-bot"), Ok("github-bot"));
        assert_eq!(pick(&candidates, |_| false), Err(vec![]));
        assert_eq!(pick(&candidates, |_| true), Err(vec!["github", "github-bot"]));
    }
}
