//! The starter configuration `valetkey init` writes: the providers a user
//! names, a staging and a protected production environment, and one agent
//! that may read and make everyday changes in staging. Text, so that it
//! keeps the comments a new user reads; a test holds it to `config check`.

use std::fmt::Write;

/// A provider `init` knows how to start with: those whose rule pack
/// needs nothing more than a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum StarterProvider {
    Railway,
    Github,
}

impl StarterProvider {
    pub fn name(self) -> &'static str {
        match self {
            StarterProvider::Railway => "railway",
            StarterProvider::Github => "github",
        }
    }

    /// The variables the agent's tools read, pointed at the broker.
    fn agent_env(self) -> &'static str {
        match self {
            StarterProvider::Railway => {
                "RAILWAY_API_TOKEN = \"{credential}\"\nRAILWAY_GRAPHQL_URL = \"{proxy_url}/graphql/v2\"\n"
            }
            StarterProvider::Github => "GH_TOKEN = \"{credential}\"\nGITHUB_API_URL = \"{proxy_url}\"\n",
        }
    }

    /// What the agent may do in staging: reads and everyday changes, never
    /// a destructive scope (those are stripped anyway).
    fn scopes(self) -> &'static str {
        match self {
            StarterProvider::Railway => r#"["read", "variable:write", "deployment:deploy"]"#,
            StarterProvider::Github => r#"["read", "contents:write", "pulls:write"]"#,
        }
    }

    /// How the resource map names this provider's ids, as a commented example.
    fn resource_example(self) -> &'static str {
        match self {
            StarterProvider::Railway => {
                "# [[resources]]\n# provider = \"railway\"\n# kind = \"project\"\n# id = \"YOUR-PROJECT-ID\"\n\
                 # environments = [\"staging\", \"production\"]\n"
            }
            StarterProvider::Github => {
                "# [[resources]]\n# provider = \"github\"\n# kind = \"repository\"\n# id = \"OWNER/REPO\"\n\
                 # environments = [\"staging\"]\n"
            }
        }
    }
}

/// The stored secret holding a provider's real token for an environment.
pub fn starter_secret(provider: StarterProvider, env: &str) -> String {
    format!("{}-{env}", provider.name())
}

/// The configuration text for `providers` (at least one) and `agent`.
pub fn starter(providers: &[StarterProvider], agent: &str) -> String {
    let mut providers = providers.to_vec();
    providers.sort();
    providers.dedup();
    let mut out = String::from(
        "# valetkey configuration, written by `valetkey init`. Every setting is\n\
         # documented in config/valetkey.toml of valetkey's source;\n\
         # `valetkey config check` reports every problem at once.\n\n\
         [server]\nlisten = \"127.0.0.1:8700\"\n\n\
         [credentials]\ndefault_ttl = \"15m\"\nmax_ttl = \"1h\"\n\n\
         # An agent never holds a credential for a protected environment unless\n\
         # a grant names it.\n\
         [environments.staging]\ndescription = \"where agents work\"\n\n\
         [environments.production]\nprotected = true\ndescription = \"customers' data\"\n",
    );
    for &p in &providers {
        let name = p.name();
        let _ = write!(
            out,
            "\n[providers.{name}]\nkind = \"{name}\"\n\n[providers.{name}.agent_env]\n{}\n\
             # The real tokens, stored encrypted in the broker:\n\
             #   printf '%s' \"$TOKEN\" | valetkey secret set {}\n\
             [providers.{name}.tokens]\nstaging = {{ stored = \"{}\" }}\nproduction = {{ stored = \"{}\" }}\n",
            p.agent_env(),
            starter_secret(p, "staging"),
            starter_secret(p, "staging"),
            starter_secret(p, "production"),
        );
    }
    let _ = write!(out, "\n[agents.{agent}]\ngrants = [\n");
    for &p in &providers {
        let _ = writeln!(
            out,
            "  {{ provider = \"{}\", environments = [\"staging\"], scopes = {} }},",
            p.name(),
            p.scopes()
        );
    }
    out.push_str(
        "]\n\n# The resource map: which environment owns each id the providers know.\n\
         # An id it does not list is refused (`unknown_resource`) until you add it:\n",
    );
    for &p in &providers {
        out.push_str(p.resource_example());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_passes_config_check() {
        for providers in [
            &[StarterProvider::Railway][..],
            &[StarterProvider::Github],
            &[
                StarterProvider::Github,
                StarterProvider::Railway,
                StarterProvider::Github,
            ],
        ] {
            let text = starter(providers, "claude");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("valetkey.toml");
            std::fs::write(&path, &text).unwrap();
            let errors: Vec<_> = crate::config::check_file(&path)
                .unwrap()
                .into_iter()
                .filter(|d| d.severity == crate::config::Severity::Error)
                .collect();
            assert!(errors.is_empty(), "{errors:?}\n{text}");
            assert!(text.contains("[agents.claude]"), "{text}");
            for p in providers {
                assert!(
                    text.contains(&format!("stored = \"{}\"", starter_secret(*p, "staging"))),
                    "{text}"
                );
            }
        }
    }
}
