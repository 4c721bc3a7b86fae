//! The values of `agent_env`: text with `{placeholder}`s filled in at mint time.

use crate::providers::ProviderKind;
use crate::providers::postgres::Login;

/// The placeholders every provider's `agent_env` may use.
const COMMON: [&str; 4] = ["credential", "broker_url", "env", "provider"];
/// Only proxied providers have a proxy URL.
const PROXIED: [&str; 1] = ["proxy_url"];
/// Only postgres providers give a database login.
const DATABASE: [&str; 6] = [
    "database_url",
    "pg_host",
    "pg_port",
    "pg_database",
    "pg_user",
    "pg_password",
];

/// The placeholders an `agent_env` value of this kind may use.
pub fn placeholders(kind: ProviderKind) -> Vec<&'static str> {
    let own: &[&str] = match kind {
        ProviderKind::Postgres => &DATABASE,
        _ => &PROXIED,
    };
    COMMON.iter().chain(own).copied().collect()
}

/// The values for one credential.
#[derive(Clone, Copy)]
pub struct TemplateValues<'a> {
    pub credential: &'a str,
    pub proxy_url: &'a str,
    pub broker_url: &'a str,
    pub env: &'a str,
    pub provider: &'a str,
    /// The role's login, for postgres providers.
    pub database: Option<&'a Login>,
}

impl TemplateValues<'_> {
    fn get(&self, name: &str) -> Option<String> {
        let db = |f: fn(&Login) -> String| self.database.map(f);
        match name {
            "credential" => Some(self.credential.to_owned()),
            "proxy_url" => Some(self.proxy_url.to_owned()),
            "broker_url" => Some(self.broker_url.to_owned()),
            "env" => Some(self.env.to_owned()),
            "provider" => Some(self.provider.to_owned()),
            "database_url" => db(|l| l.url.clone()),
            "pg_host" => db(|l| l.host.clone()),
            "pg_port" => db(|l| l.port.to_string()),
            "pg_database" => db(|l| l.database.clone()),
            "pg_user" => db(|l| l.user.clone()),
            "pg_password" => db(|l| l.password.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{0}}}`")]
    Unknown(String),
    #[error("a `{{` is not closed")]
    Unclosed,
}

/// The text between placeholders and the placeholders' names, in order.
fn pieces(template: &str) -> Result<Vec<(&str, Option<&str>)>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(TemplateError::Unclosed)?;
        out.push((&rest[..open], Some(&after[..close])));
        rest = &after[close + 1..];
    }
    out.push((rest, None));
    Ok(out)
}

/// Fills in every placeholder of `template`.
pub fn expand(template: &str, values: &TemplateValues<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for (text, name) in pieces(template)? {
        out.push_str(text);
        if let Some(name) = name {
            out.push_str(
                &values
                    .get(name)
                    .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?,
            );
        }
    }
    Ok(out)
}

/// Checks a template of a provider of this kind, without values for it.
pub fn check(template: &str, kind: ProviderKind) -> Result<(), TemplateError> {
    let known = placeholders(kind);
    for (_, name) in pieces(template)? {
        if let Some(name) = name
            && !known.contains(&name)
        {
            return Err(TemplateError::Unknown(name.to_owned()));
        }
    }
    Ok(())
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
        database: None,
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

    #[test]
    fn database_placeholders_belong_to_postgres_providers() {
        let login = Login {
            url: "postgres://vk_a:pw@h:5432/app".into(),
            host: "h".into(),
            port: 5432,
            database: "app".into(),
            user: "vk_a".into(),
            password: "pw".into(),
        };
        let values = TemplateValues {
            database: Some(&login),
            ..VALUES
        };
        assert_eq!(
            expand("{pg_user}@{pg_host}:{pg_port}/{pg_database} {database_url}", &values).unwrap(),
            "vk_a@h:5432/app postgres://vk_a:pw@h:5432/app"
        );
        assert!(check("{database_url}", ProviderKind::Postgres).is_ok());
        assert_eq!(
            check("{database_url}", ProviderKind::Github),
            Err(TemplateError::Unknown("database_url".into()))
        );
        assert_eq!(
            check("{proxy_url}", ProviderKind::Postgres),
            Err(TemplateError::Unknown("proxy_url".into()))
        );
    }
}
