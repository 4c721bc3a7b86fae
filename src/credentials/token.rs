//! `vk1.` credentials: EdDSA-signed JWTs with a `kid` header.
//!
//! The algorithm is pinned: the header is read first and anything but
//! `EdDSA` is refused before a key is looked at. Signatures are the JWT
//! crate's; the time checks are ours, against the `now` passed in.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{KeyRing, SigningKey};
use crate::secrets::SecretString;

/// Every credential starts with this, so scanners and the broker know it.
pub const PREFIX: &str = "vk1.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The agent.
    pub sub: String,
    pub env: String,
    /// Provider → scopes. Never holds a destructive or catastrophic scope.
    pub grants: BTreeMap<String, Vec<String>>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The lease id.
    pub jti: String,
    /// The launch session.
    pub sid: String,
    /// Kept alive by its launcher's heartbeat: valid only while the broker
    /// holds a live heartbeat for its lease, up to `exp` (the session's end).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hb: bool,
}

/// What a credential must say about who issued it and for whom.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot sign a credential: {0}")]
pub struct TokenError(#[from] jsonwebtoken::errors::Error);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a valetkey credential: {why}")]
    Malformed { why: &'static str },
    #[error("credentials are signed with EdDSA only; this one says `{alg}`")]
    Algorithm { alg: String },
    #[error("credential was signed by key `{kid}`, which this broker does not know")]
    UnknownKey { kid: String },
    #[error("the credential's signature does not verify")]
    Signature,
    #[error("the credential's claims are not valid: {why}")]
    Claims { why: String },
    #[error("the credential was issued by `{found}`, not by this broker")]
    Issuer { found: String },
    #[error("the credential is for audience `{found}`, not for this broker")]
    Audience { found: String },
    #[error("the credential of agent `{}` for `{}` (lease `{}`) expired at {}", claims.sub, claims.env, claims.jti, crate::time::rfc3339(claims.exp as i64))]
    Expired { claims: Box<Claims> },
    #[error("the credential is not valid before {nbf} (unix time)")]
    NotYetValid { nbf: u64 },
}

/// Signs claims with the ring's key; returns `vk1.<JWT>`.
pub fn sign(claims: &Claims, key: &SigningKey) -> Result<SecretString, TokenError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let jwt = zeroize::Zeroizing::new(jsonwebtoken::encode(&header, claims, &key.encoding)?);
    Ok(SecretString::from(format!("{PREFIX}{}", jwt.as_str())))
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<serde_json::Value>,
    kid: Option<String>,
}

/// Verifies a credential completely: form, algorithm, key, signature,
/// issuer, audience, and lifetime at `now` (unix seconds).
pub fn verify(token: &str, ring: &KeyRing, expected: &Expected<'_>, now: u64) -> Result<Claims, VerifyError> {
    let jwt = token.strip_prefix(PREFIX).ok_or(VerifyError::Malformed {
        why: "it does not start with `vk1.`",
    })?;
    let header_b64 = jwt.split('.').next().unwrap_or_default();
    if jwt.split('.').count() != 3 {
        return Err(VerifyError::Malformed {
            why: "a credential has three dot-separated parts after `vk1.`",
        });
    }
    let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| VerifyError::Malformed {
        why: "its header is not base64url",
    })?;
    let header: RawHeader = serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed {
        why: "its header is not a JSON object",
    })?;
    match &header.alg {
        Some(serde_json::Value::String(alg)) if alg == "EdDSA" => {}
        Some(serde_json::Value::String(alg)) => return Err(VerifyError::Algorithm { alg: alg.clone() }),
        Some(other) => {
            return Err(VerifyError::Algorithm { alg: other.to_string() });
        }
        None => return Err(VerifyError::Algorithm { alg: "(none)".into() }),
    }
    let kid = header.kid.ok_or(VerifyError::UnknownKey { kid: "(none)".into() })?;
    let key = ring
        .get(&kid)
        .ok_or_else(|| VerifyError::UnknownKey { kid: kid.clone() })?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    // Time is checked below against the caller's `now`.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.audience]);

    let claims = match jsonwebtoken::decode::<Claims>(jwt, &key.decoding, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::Signature,
                ErrorKind::InvalidIssuer => VerifyError::Issuer {
                    found: unverified_claim(jwt, "iss"),
                },
                ErrorKind::InvalidAudience => VerifyError::Audience {
                    found: unverified_claim(jwt, "aud"),
                },
                ErrorKind::MissingRequiredClaim(c) => VerifyError::Claims {
                    why: format!("`{c}` is missing"),
                },
                ErrorKind::InvalidClaimFormat(c) => VerifyError::Claims {
                    why: format!("`{c}` has the wrong type"),
                },
                ErrorKind::Json(e) => VerifyError::Claims { why: e.to_string() },
                _ => VerifyError::Malformed {
                    why: "its parts do not decode",
                },
            });
        }
    };
    if now >= claims.exp {
        return Err(VerifyError::Expired {
            claims: Box::new(claims),
        });
    }
    if now < claims.nbf {
        return Err(VerifyError::NotYetValid { nbf: claims.nbf });
    }
    Ok(claims)
}

/// A claim's text from a payload whose signature has already verified, to
/// say what was presented.
fn unverified_claim(jwt: &str, name: &str) -> String {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v.get(name).cloned())
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_else(|| "(none)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::new_signing_key;
    use crate::secrets::{ExposeSecret, MasterKey};

    const NOW: u64 = 1_800_000_000;
    const EXPECTED: Expected<'static> = Expected {
        issuer: "valetkey",
        audience: "valetkey",
    };

    fn ring() -> KeyRing {
        let (master, _) = MasterKey::generate().unwrap();
        let old = new_signing_key(&master, 1).unwrap();
        let mut new = new_signing_key(&master, 2).unwrap();
        new.retired_at = None;
        let mut old = old;
        old.retired_at = Some(2);
        KeyRing::open(&[new, old], &master).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            iss: "valetkey".into(),
            aud: "valetkey".into(),
            sub: "claude".into(),
            env: "staging".into(),
            grants: [("railway".to_owned(), vec!["read".to_owned()])].into(),
            iat: NOW - 10,
            nbf: NOW - 10,
            exp: NOW + 600,
            jti: "lease".into(),
            sid: "session".into(),
            hb: false,
        }
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Signs any header and payload with a key of the ring, as an attacker
    /// holding that key could, to test what verification does with them.
    fn forge(ring: &KeyRing, header: serde_json::Value, payload: serde_json::Value) -> String {
        let key = ring.active().unwrap();
        let message = format!("{}.{}", b64(&header), b64(&payload));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, Algorithm::EdDSA).unwrap();
        format!("{PREFIX}{message}.{sig}")
    }

    fn header(ring: &KeyRing) -> serde_json::Value {
        serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": ring.active().unwrap().kid })
    }

    #[test]
    fn a_signed_credential_verifies_with_active_and_retired_keys() {
        let ring = ring();
        let token = sign(&claims(), ring.active().unwrap()).unwrap();
        assert!(token.expose_secret().starts_with(PREFIX));
        assert_eq!(verify(token.expose_secret(), &ring, &EXPECTED, NOW).unwrap(), claims());

        let retired = ring.get(ring.kids()[1]).unwrap();
        assert!(retired.retired_at.is_some());
        let old = sign(&claims(), retired).unwrap();
        assert_eq!(
            verify(old.expose_secret(), &ring, &EXPECTED, NOW).unwrap().sub,
            "claude"
        );
    }

    #[test]
    fn every_negative_case_has_its_own_error() {
        let ring = ring();
        let good = serde_json::to_value(claims()).unwrap();
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let unsigned = |alg: &str| {
            let h = serde_json::json!({ "alg": alg, "kid": ring.active().unwrap().kid });
            format!("{PREFIX}{}.{}.", b64(&h), b64(&good))
        };
        let signed = sign(&claims(), ring.active().unwrap()).unwrap();
        // Flip one character in the middle of the signature.
        let mut tampered = signed.expose_secret().as_bytes().to_vec();
        let at = tampered.len() - 20;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();

        let cases: Vec<(&str, String, VerifyError)> = vec![
            (
                "no prefix",
                "eyJhbGciOi.x.y".into(),
                VerifyError::Malformed {
                    why: "it does not start with `vk1.`",
                },
            ),
            (
                "two parts",
                format!("{PREFIX}a.b"),
                VerifyError::Malformed {
                    why: "a credential has three dot-separated parts after `vk1.`",
                },
            ),
            (
                "alg none",
                unsigned("none"),
                VerifyError::Algorithm { alg: "none".into() },
            ),
            (
                "alg None",
                unsigned("None"),
                VerifyError::Algorithm { alg: "None".into() },
            ),
            (
                "alg NONE",
                unsigned("NONE"),
                VerifyError::Algorithm { alg: "NONE".into() },
            ),
            (
                "alg nOnE",
                unsigned("nOnE"),
                VerifyError::Algorithm { alg: "nOnE".into() },
            ),
            (
                "alg HS256",
                unsigned("HS256"),
                VerifyError::Algorithm { alg: "HS256".into() },
            ),
            (
                "unknown kid",
                forge(
                    &ring,
                    serde_json::json!({ "alg": "EdDSA", "kid": "nope" }),
                    good.clone(),
                ),
                VerifyError::UnknownKey { kid: "nope".into() },
            ),
            ("bad signature", tampered, VerifyError::Signature),
            (
                "string exp",
                forge(
                    &ring,
                    header(&ring),
                    with("exp", serde_json::json!((NOW + 600).to_string())),
                ),
                VerifyError::Claims {
                    why: "invalid type: string \"1800000600\", expected u64 at line 1 column 52".into(),
                },
            ),
            (
                "wrong audience",
                forge(&ring, header(&ring), with("aud", serde_json::json!("someone-else"))),
                VerifyError::Audience {
                    found: "someone-else".into(),
                },
            ),
            (
                "wrong issuer",
                forge(&ring, header(&ring), with("iss", serde_json::json!("evil"))),
                VerifyError::Issuer { found: "evil".into() },
            ),
            (
                "expired",
                forge(&ring, header(&ring), with("exp", serde_json::json!(NOW))),
                VerifyError::Expired {
                    claims: Box::new(Claims { exp: NOW, ..claims() }),
                },
            ),
            (
                "not yet valid",
                forge(&ring, header(&ring), with("nbf", serde_json::json!(NOW + 5))),
                VerifyError::NotYetValid { nbf: NOW + 5 },
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(verify(&token, &ring, &EXPECTED, NOW), Err(want), "{name}");
        }
    }
}
