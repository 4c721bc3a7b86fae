//! What `run` and `env` give an agent's tools so that they reach providers
//! through the forward proxy unchanged: the proxy variables (with the
//! credential as the proxy password), `NO_PROXY` for the broker itself,
//! the provider token variables the tools read (holding the credential,
//! which the broker swaps for the real token), git's credential, and one CA
//! bundle (the system's roots and the broker's CA) named in every variable
//! a common stack reads one from. `variables` is pure; `write_bundle` is
//! the one write.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// Every variable a common stack reads its trusted CAs from: each is set
/// to the bundle, so an inherited one cannot point a tool elsewhere.
pub const CA_VARIABLES: [&str; 16] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "DENO_CERT",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "NPM_CONFIG_CAFILE",
    "HTTPLIB2_CA_CERTS",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NIX_SSL_CERT_FILE",
    "BUNDLE_SSL_CA_CERT",
    "COMPOSER_CAFILE",
    "YARN_CAFILE",
];

/// Inherited variables that would take a tool around the bundle or the
/// proxy: removed.
pub const REMOVED: [&str; 15] = [
    "SSL_CERT_DIR",
    "GIT_SSL_CAPATH",
    "NODE_TLS_REJECT_UNAUTHORIZED",
    "GIT_SSL_NO_VERIFY",
    "PYTHONHTTPSVERIFY",
    "GIT_PROXY_COMMAND",
    "GIT_CONFIG_PARAMETERS",
    "npm_config_proxy",
    "npm_config_https_proxy",
    "npm_config_noproxy",
    "NPM_CONFIG_PROXY",
    "NPM_CONFIG_HTTPS_PROXY",
    "PIP_PROXY",
    "CARGO_HTTP_PROXY",
    "YARN_HTTPS_PROXY",
];

const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the broker said about its forward proxy at mint.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Settings {
    pub provider_hosts: Vec<String>,
    pub token_variables: Vec<String>,
}

/// The variables to set, in order; values may hold the credential.
pub fn variables(
    broker: &url::Url,
    credential: &SecretString,
    settings: &Settings,
    bundle: &Path,
    inherited_git_config: usize,
) -> Vec<(String, SecretString)> {
    let mut proxy = broker.clone();
    proxy.set_path("");
    proxy.set_query(None);
    proxy.set_fragment(None);
    let _ = proxy.set_username("valetkey");
    let _ = proxy.set_password(Some(credential.expose_secret()));
    let proxy = proxy.as_str().trim_end_matches('/').to_owned();
    let mut out: Vec<(String, SecretString)> = Vec::new();
    let mut set = |name: &str, value: String| out.push((name.to_owned(), SecretString::from(value)));
    for name in PROXY_VARIABLES {
        set(name, proxy.clone());
    }
    let no_proxy = no_proxy(broker, &settings.provider_hosts);
    set("NO_PROXY", no_proxy.clone());
    set("no_proxy", no_proxy);
    // Node 24 (and 22.21 on) reads the proxy variables with this set.
    set("NODE_USE_ENV_PROXY", "1".into());
    let bundle = bundle.display().to_string();
    for name in CA_VARIABLES {
        set(name, bundle.clone());
    }
    set("npm_config_cafile", bundle);
    for name in &settings.token_variables {
        set(name, credential.expose_secret().to_owned());
    }
    // git's own settings, after any the launcher passes on: the credential
    // as a header for the providers' hosts only, never for another remote.
    let header = format!("Authorization: Bearer {}", credential.expose_secret());
    let mut n = inherited_git_config;
    for host in &settings.provider_hosts {
        set(
            &format!("GIT_CONFIG_KEY_{n}"),
            format!("http.https://{host}/.extraHeader"),
        );
        set(&format!("GIT_CONFIG_VALUE_{n}"), header.clone());
        n += 1;
    }
    set("GIT_CONFIG_COUNT", n.to_string());
    out
}

/// The hosts tools reach directly: the broker itself, and loopback unless
/// a provider is served there. Never a provider's host.
fn no_proxy(broker: &url::Url, provider_hosts: &[String]) -> String {
    let mut hosts: Vec<String> = Vec::new();
    if let Some(host) = broker.host_str() {
        hosts.push(host.trim_matches(['[', ']']).to_ascii_lowercase());
    }
    for loopback in ["localhost", "127.0.0.1", "::1"] {
        if !hosts.iter().any(|h| h == loopback) {
            hosts.push(loopback.to_owned());
        }
    }
    // Clients read a NO_PROXY entry as a domain and everything under it.
    hosts.retain(|h| {
        !provider_hosts.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            p == *h || p.ends_with(&format!(".{h}"))
        })
    });
    hosts.join(",")
}

/// Writes the bundle (the system's trusted roots, as the launcher's own
/// settings find them, then the broker's CA) into `dir`, readable by all:
/// it holds no secret, and the agent may run as another user.
pub fn write_bundle(dir: &Path, ca_pem: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let roots = rustls_native_certs::load_native_certs();
    if roots.certs.is_empty() {
        let why: Vec<String> = roots.errors.iter().map(ToString::to_string).collect();
        eprintln!(
            "valetkey: warning: cannot read this machine's trusted CAs ({}): the agent's tools will trust only the \
             broker's CA, so hosts tunnelled through the proxy will fail their TLS checks. Check SSL_CERT_FILE and \
             SSL_CERT_DIR, or install ca-certificates",
            if why.is_empty() {
                "none found".to_owned()
            } else {
                why.join("; ")
            }
        );
    }
    let mut text = String::new();
    for cert in &roots.certs {
        text.push_str(&pem::encode_config(
            &pem::Pem::new("CERTIFICATE", cert.to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
    }
    text.push_str(ca_pem);
    let path = dir.join("ca-bundle.pem");
    let partial = dir.join(".ca-bundle.pem.partial");
    // A fresh file, never one (or a link) that was there.
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// How many `GIT_CONFIG_KEY_n` the launcher's environment holds already.
pub fn inherited_git_config() -> usize {
    std::env::var("GIT_CONFIG_COUNT")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(broker: &str, hosts: &[&str]) -> std::collections::BTreeMap<String, String> {
        let settings = Settings {
            provider_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            token_variables: vec!["GH_TOKEN".into()],
        };
        variables(
            &url::Url::parse(broker).unwrap(),
            &SecretString::from("vk1.a.b.c"),
            &settings,
            Path::new("/run/vk/ca-bundle.pem"),
            2,
        )
        .into_iter()
        .map(|(k, v)| (k, v.expose_secret().to_owned()))
        .collect()
    }

    #[test]
    fn every_tool_gets_the_proxy_with_the_credential_the_bundle_and_its_token() {
        let v = vars("http://127.0.0.1:8700/", &["api.github.com"]);
        for name in PROXY_VARIABLES {
            assert_eq!(v[name], "http://valetkey:vk1.a.b.c@127.0.0.1:8700", "{name}");
        }
        for name in CA_VARIABLES {
            assert_eq!(v[name], "/run/vk/ca-bundle.pem", "{name}");
        }
        assert_eq!(v["GH_TOKEN"], "vk1.a.b.c");
        assert_eq!(v["NO_PROXY"], "127.0.0.1,localhost,::1");
        assert_eq!(v["GIT_CONFIG_COUNT"], "3");
        assert_eq!(v["GIT_CONFIG_KEY_2"], "http.https://api.github.com/.extraHeader");
        assert_eq!(v["GIT_CONFIG_VALUE_2"], "Authorization: Bearer vk1.a.b.c");
    }

    #[test]
    fn a_provider_host_is_never_left_out_of_the_proxy() {
        let v = vars("https://broker.internal:8700/base?x=1", &["127.0.0.1", "localhost"]);
        assert_eq!(v["NO_PROXY"], "broker.internal,::1");
        assert_eq!(v["HTTPS_PROXY"], "https://valetkey:vk1.a.b.c@broker.internal:8700");
        // An entry covers the domains under it, as clients read it.
        let v = vars("https://github.com:8700/", &["api.github.com"]);
        assert_eq!(v["NO_PROXY"], "localhost,127.0.0.1,::1");
    }
}
