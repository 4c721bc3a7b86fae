//! The values of `agent_env`: text with `{placeholder}`s filled in at mint time.

/// The placeholders an `agent_env` value may use.
pub const PLACEHOLDERS: [&str; 5] = ["credential", "proxy_url", "broker_url", "env", "provider"];

/// The values for one credential.
#[derive(Clone, Copy)]
pub struct TemplateValues<'a> {
    pub credential: &'a str,
    pub proxy_url: &'a str,
    pub broker_url: &'a str,
    pub env: &'a str,
    pub provider: &'a str,
}

impl TemplateValues<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "credential" => self.credential,
            "proxy_url" => self.proxy_url,
            "broker_url" => self.broker_url,
            "env" => self.env,
            "provider" => self.provider,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{0}}}`")]
    Unknown(String),
    #[error("a `{{` is not closed")]
    Unclosed,
}

/// Fills in every placeholder of `template`.
pub fn expand(template: &str, values: &TemplateValues<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(TemplateError::Unclosed)?;
        let name = &after[..close];
        out.push_str(
            values
                .get(name)
                .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?,
        );
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a template without values for it.
pub fn check(template: &str) -> Result<(), TemplateError> {
    let probe = TemplateValues {
        credential: "",
        proxy_url: "",
        broker_url: "",
        env: "",
        provider: "",
    };
    expand(template, &probe).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: TemplateValues<'static> = TemplateValues {
        credential: "vk1.x",
        proxy_url: "http://b/p/railway",
        broker_url: "http://b",
        env: "staging",
        provider: "railway",
    };

    #[test]
    fn expands_every_placeholder() {
        let cases = [
            ("{credential}", Ok("vk1.x".to_owned())),
            ("{proxy_url}/graphql/v2", Ok("http://b/p/railway/graphql/v2".to_owned())),
            (
                "{provider}-{env} at {broker_url}",
                Ok("railway-staging at http://b".to_owned()),
            ),
            ("plain", Ok("plain".to_owned())),
            ("{token}", Err(TemplateError::Unknown("token".into()))),
            ("{credential", Err(TemplateError::Unclosed)),
        ];
        for (template, want) in cases {
            assert_eq!(expand(template, &VALUES), want, "{template}");
        }
    }
}
