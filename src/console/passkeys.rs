//! WebAuthn ceremonies (webauthn-rs, passkeys with user verification
//! required): enrolling with an admin's one-time code, signing in, and
//! deciding on one held request. A ceremony's state stays on the server,
//! bound to what it is for, and is taken once at its end.

use std::sync::Arc;

use axum::Json;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
};

use super::{Checked, Console, PasskeyVerified, State, random_token};
use crate::api::Problem;
use crate::approvals::flow::{ApprovalError, Proof, Verdict, passkey_record_id};
use crate::approvals::{Status, status};
use crate::peer::Client;
use crate::secrets::{ExposeSecret, SecretString};
use crate::time::{unix_ms, unix_secs};

/// A ceremony under way, and what it is for.
pub enum Ceremony {
    Enroll {
        approver: String,
        state: PasskeyRegistration,
    },
    SignIn {
        approver: String,
        state: PasskeyAuthentication,
    },
    Vouch {
        /// Who vouches: the signed-in approver.
        approver: String,
        session_id: String,
        /// Whose factor, and when it was registered (the one shown).
        target: String,
        since: i64,
        state: PasskeyAuthentication,
    },
    Decide {
        approver: String,
        session_id: String,
        approval_id: String,
        digest: String,
        verdict: Verdict,
        state: PasskeyAuthentication,
    },
}

fn refused(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(status, kind, "The console refused", detail)
}

fn store_error(e: crate::store::StoreError) -> Problem {
    Problem::store(&e)
}

impl Console {
    fn begin(&self, ceremony: Ceremony) -> Result<String, Problem> {
        let id = random_token().ok_or_else(|| Problem::internal(&"the system's random source failed"))?;
        self.ceremonies.insert(id.clone(), Arc::new(ceremony));
        Ok(id)
    }

    /// Takes the ceremony: it ends here, whatever comes of it.
    fn end(&self, id: &str) -> Result<Arc<Ceremony>, Problem> {
        self.ceremonies.remove(id).ok_or_else(|| {
            refused(
                StatusCode::BAD_REQUEST,
                "ceremony_unknown",
                "this passkey step is unknown or took too long; start again",
            )
        })
    }

    /// Begins a passkey assertion by `approver`: its options for the
    /// browser, and the ceremony `make` builds around its state.
    async fn assertion(
        &self,
        approver: &str,
        make: impl FnOnce(PasskeyAuthentication) -> Ceremony,
    ) -> Result<Json<Value>, Problem> {
        self.assertion_with(&self.passkeys(approver).await?, make)
    }

    /// `assertion`, with the approver's passkeys read already.
    fn assertion_with(
        &self,
        passkeys: &[Passkey],
        make: impl FnOnce(PasskeyAuthentication) -> Ceremony,
    ) -> Result<Json<Value>, Problem> {
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(passkeys)
            .map_err(|e| Problem::internal(&e))?;
        let ceremony = self.begin(make(state))?;
        Ok(Json(json!({ "ceremony": ceremony, "options": options })))
    }

    /// The approver's passkeys, opened under the master key.
    async fn passkeys(&self, approver: &str) -> Result<Vec<Passkey>, Problem> {
        let master = self.broker.master();
        let stored = self.broker.store().passkeys(approver).await.map_err(store_error)?;
        stored
            .iter()
            .map(|(credential, sealed)| {
                let json = master
                    .open(&passkey_record_id(&format!("{approver}:{credential}")), sealed)
                    .map_err(|e| Problem::internal(&e))?;
                serde_json::from_slice(&json).map_err(|e| Problem::internal(&e))
            })
            .collect()
    }

    /// Seals a passkey for the store: (credential id, sealed).
    async fn sealed_passkey(
        &self,
        approver: &str,
        passkey: &Passkey,
    ) -> Result<(String, crate::secrets::Sealed), Problem> {
        use base64::Engine;
        let credential = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(passkey.cred_id().as_ref());
        let json = serde_json::to_vec(passkey).map_err(|e| Problem::internal(&e))?;
        let (_sealing, master) = self.broker.sealing().await;
        let sealed = master
            .seal(&passkey_record_id(&format!("{approver}:{credential}")), &json)
            .map_err(|e| Problem::internal(&e))?;
        Ok((credential, sealed))
    }

    /// Verifies an assertion against the ceremony's state and the
    /// approver's passkeys, and keeps the counter it moved.
    async fn verify(
        &self,
        approver: &str,
        state: &PasskeyAuthentication,
        credential: &PublicKeyCredential,
    ) -> Result<PasskeyVerified, Problem> {
        let result = self
            .webauthn
            .finish_passkey_authentication(credential, state)
            .map_err(|e| {
                refused(
                    StatusCode::UNAUTHORIZED,
                    "passkey_invalid",
                    format!("the passkey did not prove it: {e}"),
                )
            })?;
        if !result.user_verified() {
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "passkey_invalid",
                "the passkey did not verify its user (PIN or biometrics)",
            ));
        }
        if result.needs_update() {
            for mut passkey in self.passkeys(approver).await? {
                if passkey.update_credential(&result) == Some(true) {
                    let (credential, sealed) = self.sealed_passkey(approver, &passkey).await?;
                    self.broker
                        .store()
                        .update_passkey(approver, &credential, &sealed)
                        .await
                        .map_err(store_error)?;
                }
            }
        }
        Ok(PasskeyVerified(()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollStart {
    approver: String,
    code: String,
}

/// Takes the approver's enrollment code and starts registering a passkey.
pub async fn enroll_start(
    axum::extract::State(console): State,
    Client(client): Client,
    Json(body): Json<EnrollStart>,
) -> Result<Json<Value>, Problem> {
    let broker = &console.broker;
    let now = Console::now();
    if !broker.config().approvers.contains_key(&body.approver) {
        return Err(ApprovalError::UnknownApprover {
            approver: body.approver,
        }
        .into());
    }
    let code = SecretString::from(body.code.trim());
    let taken = broker
        .store()
        .take_enrollment(
            &crate::credentials::hash_opaque_key(code.expose_secret()),
            &body.approver,
            broker.enrollment_cutoff(now),
            unix_secs(now),
        )
        .await
        .map_err(store_error)?;
    broker.enrollment_taken(&body.approver, taken, client, now).await?;
    let existing: Vec<_> = console
        .passkeys(&body.approver)
        .await?
        .iter()
        .map(|p| p.cred_id().clone())
        .collect();
    let (options, state) = console
        .webauthn
        .start_passkey_registration(uuid::Uuid::new_v4(), &body.approver, &body.approver, Some(existing))
        .map_err(|e| Problem::internal(&e))?;
    let ceremony = console.begin(Ceremony::Enroll {
        approver: body.approver,
        state,
    })?;
    Ok(Json(json!({ "ceremony": ceremony, "options": options })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish<T> {
    ceremony: String,
    credential: T,
}

/// Registers the new passkey as the approver's; recorded and alerted.
pub async fn enroll_finish(
    axum::extract::State(console): State,
    Json(body): Json<Finish<RegisterPublicKeyCredential>>,
) -> Result<Json<Value>, Problem> {
    let ceremony = console.end(&body.ceremony)?;
    let Ceremony::Enroll { approver, state } = ceremony.as_ref() else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "ceremony_unknown",
            "this is not an enrollment; start again",
        ));
    };
    let passkey = console
        .webauthn
        .finish_passkey_registration(&body.credential, state)
        .map_err(|e| {
            refused(
                StatusCode::BAD_REQUEST,
                "passkey_invalid",
                format!("the passkey was not registered: {e}"),
            )
        })?;
    let (credential, sealed) = console.sealed_passkey(approver, &passkey).await?;
    let now = Console::now();
    let added = console
        .broker
        .store()
        .put_passkey(approver, &credential, &sealed, unix_secs(now))
        .await
        .map_err(store_error)?;
    if !added {
        return Err(refused(
            StatusCode::CONFLICT,
            "passkey_registered",
            "this passkey is registered already; register another",
        ));
    }
    console
        .broker
        .record_enrollment(approver, "passkey", false, now)
        .await
        .map_err(store_error)?;
    Ok(Json(
        json!({ "approver": approver, "in_use": false, "awaiting_vouch": true }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInStart {
    approver: String,
}

pub async fn signin_start(
    axum::extract::State(console): State,
    Json(body): Json<SignInStart>,
) -> Result<Json<Value>, Problem> {
    let passkeys = console.passkeys(&body.approver).await?;
    if !console.broker.config().approvers.contains_key(&body.approver) || passkeys.is_empty() {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "approver_not_enrolled",
            format!(
                "`{}` is not an approver with a passkey in use here: enroll first with the code an admin gives you, and have an enrolled approver vouch for it (`valetkey approver vouch NAME --as THEM`)",
                body.approver
            ),
        ));
    }
    console.assertion_with(&passkeys, |state| Ceremony::SignIn {
        approver: body.approver,
        state,
    })
}

pub async fn signin_finish(
    axum::extract::State(console): State,
    Json(body): Json<Finish<PublicKeyCredential>>,
) -> Result<Response, Problem> {
    let ceremony = console.end(&body.ceremony)?;
    let Ceremony::SignIn { approver, state } = ceremony.as_ref() else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "ceremony_unknown",
            "this is not a sign-in; start again",
        ));
    };
    console.verify(approver, state, &body.credential).await?;
    let (_session, cookie) = console.sign_in(approver)?;
    let mut response = Json(json!({ "approver": approver, "next": "/console/approvals" })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

async fn held(console: &Console, id: &str) -> Result<crate::approvals::Approval, Problem> {
    Ok(console
        .broker
        .store()
        .approval(id)
        .await
        .map_err(store_error)?
        .ok_or(ApprovalError::Unknown { id: id.to_owned() })?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideStart {
    /// `approve` or `deny`.
    verdict: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Starts the passkey assertion that decides on one approval: bound to the
/// signed-in approver, this approval as it is now, and the verdict.
pub async fn decide_start(
    axum::extract::State(console): State,
    Checked(session): Checked,
    Path(id): Path<String>,
    Json(body): Json<DecideStart>,
) -> Result<Json<Value>, Problem> {
    let verdict = match (body.verdict.as_str(), body.reason) {
        ("approve", _) => Verdict::Approve,
        ("deny", Some(reason)) if !reason.trim().is_empty() => Verdict::Deny { reason },
        ("deny", _) => return Err(ApprovalError::NoReason.into()),
        _ => {
            return Err(Problem::bad_request(
                "invalid_request",
                "`verdict` is `approve` or `deny`",
            ));
        }
    };
    let approval = held(&console, &id).await?;
    match status(&approval, unix_ms(Console::now())) {
        Status::Pending => {}
        closed => return Err(ApprovalError::Closed { id, status: closed }.into()),
    }
    console
        .assertion(&session.approver, |state| Ceremony::Decide {
            approver: session.approver.clone(),
            session_id: session.id.clone(),
            approval_id: id,
            digest: approval.digest,
            verdict,
            state,
        })
        .await
}

/// Ends the assertion and decides: the same approver, session and
/// approval the ceremony began for, and the request unchanged since.
pub async fn decide_finish(
    axum::extract::State(console): State,
    Checked(session): Checked,
    Client(client): Client,
    Path(id): Path<String>,
    Json(body): Json<Finish<PublicKeyCredential>>,
) -> Result<Json<Value>, Problem> {
    let ceremony = console.end(&body.ceremony)?;
    let Ceremony::Decide {
        approver,
        session_id,
        approval_id,
        digest,
        verdict,
        state,
    } = ceremony.as_ref()
    else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "ceremony_unknown",
            "this is not a decision; start again",
        ));
    };
    if *session_id != session.id || *approval_id != id {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "ceremony_mismatch",
            "this passkey step began for another sign-in or another approval; start again",
        ));
    }
    let current = held(&console, &id).await?;
    if current.digest != *digest {
        return Err(refused(
            StatusCode::CONFLICT,
            "approval_changed",
            "the approval is not the one shown when you began; reload it",
        ));
    }
    let proof = console.verify(approver, state, &body.credential).await?;
    let now = Console::now();
    let after = console
        .broker
        .decide_approval(&id, approver, Proof::Passkey(proof), verdict.clone(), client, now)
        .await?;
    Ok(Json(
        json!({ "id": after.id, "status": status(&after, unix_ms(now)), "approved_by": after.approved_by }),
    ))
}

/// When `approver`'s factor awaiting a vouch was registered, if one does
/// and has not run out.
async fn waiting_since(console: &Console, approver: &str) -> Result<Option<i64>, Problem> {
    let cutoff = console.broker.enrollment_cutoff(Console::now());
    Ok(console
        .broker
        .store()
        .awaiting_vouch()
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|(name, _, since)| name == approver && *since >= cutoff)
        .map(|(_, _, since)| since)
        .min())
}

/// Starts the passkey assertion with which the signed-in approver vouches
/// for `name`'s factor awaiting a vouch: bound to the sign-in, that
/// approver and the factor's registration time as shown.
pub async fn vouch_start(
    axum::extract::State(console): State,
    Checked(session): Checked,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let Some(since) = waiting_since(&console, &name).await? else {
        return Err(ApprovalError::NothingToVouch { approver: name }.into());
    };
    console
        .assertion(&session.approver, |state| Ceremony::Vouch {
            approver: session.approver.clone(),
            session_id: session.id.clone(),
            target: name,
            since,
            state,
        })
        .await
}

/// Ends the assertion and vouches, when the factor waiting is still the
/// one the approver was shown.
pub async fn vouch_finish(
    axum::extract::State(console): State,
    Checked(session): Checked,
    Client(client): Client,
    Path(name): Path<String>,
    Json(body): Json<Finish<PublicKeyCredential>>,
) -> Result<Json<Value>, Problem> {
    let ceremony = console.end(&body.ceremony)?;
    let Ceremony::Vouch {
        approver,
        session_id,
        target,
        since,
        state,
    } = ceremony.as_ref()
    else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "ceremony_unknown",
            "this is not a vouch; start again",
        ));
    };
    if *session_id != session.id || *target != name {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "ceremony_mismatch",
            "this passkey step began for another sign-in or another approver; start again",
        ));
    }
    if waiting_since(&console, &name).await? != Some(*since) {
        return Err(refused(
            StatusCode::CONFLICT,
            "enrollment_changed",
            "the factor awaiting a vouch is not the one shown when you began; reload the page",
        ));
    }
    let proof = console.verify(approver, state, &body.credential).await?;
    let vouched = console
        .broker
        .vouch(
            approver,
            Proof::Passkey(proof),
            std::slice::from_ref(&name),
            client,
            Console::now(),
        )
        .await?;
    Ok(Json(json!({
        "vouched": vouched.iter().map(|(name, factors)| json!({ "approver": name, "factors": factors })).collect::<Vec<_>>()
    })))
}
