//! An approver's code factor: RFC 6238 TOTP (SHA-1, 6 digits, 30-second
//! steps, what every authenticator app reads from an `otpauth://` URI),
//! through `totp-rs`. A code is taken once: the step it matched must be
//! later than the last one used, which the store moves forward atomically.

use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
/// Steps either side of now that a code may come from (a phone's clock).
const SKEW: u64 = 1;
/// 160 bits, RFC 4226's recommended secret length.
const SECRET_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefusal {
    #[error("the code is not 6 digits")]
    Malformed,
    #[error("the code is not the one the approver's authenticator shows now")]
    Wrong,
    #[error("the code was used already; wait for the next one")]
    Replayed,
}

/// A fresh secret.
pub fn generate() -> Result<Zeroizing<Vec<u8>>, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    ring::rand::SystemRandom::new().fill(&mut secret)?;
    Ok(secret)
}

fn totp(secret: &[u8], approver: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        SKEW as u8,
        STEP_SECS,
        secret.to_vec(),
        Some("valetkey".into()),
        approver.to_owned(),
    )
}

/// The URI an authenticator app reads (as a QR code or pasted), and the
/// secret in base32 for apps that take it typed.
pub fn provisioning(secret: &[u8], approver: &str) -> (Zeroizing<String>, Zeroizing<String>) {
    let t = totp(secret, approver);
    (Zeroizing::new(t.get_url()), Zeroizing::new(t.get_secret_base32()))
}

/// The code for the step holding `now_secs` (tests and the enrollment's
/// own check use it).
pub fn code_at(secret: &[u8], now_secs: u64) -> String {
    totp(secret, "").generate(now_secs)
}

/// Whether `code` could be a code at all: six ASCII digits.
pub fn well_formed(code: &str) -> Result<(), CodeRefusal> {
    let code = code.trim();
    if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(CodeRefusal::Malformed)
    }
}

/// The step `code` was made for, at most [`SKEW`] steps from now and after
/// `last_step` (the last one this factor used).
pub fn verify(secret: &[u8], code: &str, now_secs: u64, last_step: i64) -> Result<i64, CodeRefusal> {
    well_formed(code)?;
    let code = code.trim();
    let t = totp(secret, "");
    let now_step = now_secs / STEP_SECS;
    let matched = (now_step.saturating_sub(SKEW)..=now_step + SKEW).find(|step| {
        let expected = t.generate(step * STEP_SECS);
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into()
    });
    match matched {
        None => Err(CodeRefusal::Wrong),
        Some(step) if (step as i64) <= last_step => Err(CodeRefusal::Replayed),
        Some(step) => Ok(step as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_taken_within_a_step_of_now_and_only_once() {
        let secret = generate().unwrap();
        let now = 1_800_000_000;
        let code = code_at(&secret, now);
        let step = verify(&secret, &code, now, 0).unwrap();
        assert_eq!(step, (now / 30) as i64);
        // A phone a step behind or ahead.
        assert_eq!(verify(&secret, &code, now + 30, 0), Ok(step));
        assert_eq!(verify(&secret, &code, now - 30, 0), Ok(step));
        assert_eq!(verify(&secret, &code, now + 90, 0), Err(CodeRefusal::Wrong));
        // Used once: the same code, or an older one, is refused.
        assert_eq!(verify(&secret, &code, now, step), Err(CodeRefusal::Replayed));
        let older = code_at(&secret, now - 30);
        if older != code {
            assert_eq!(verify(&secret, &older, now, step), Err(CodeRefusal::Replayed));
        }
        let next = code_at(&secret, now + 30);
        assert_eq!(verify(&secret, &next, now + 30, step), Ok(step + 1));
        // Another secret's code, and what is no code.
        let other = generate().unwrap();
        let theirs = code_at(&other, now);
        if theirs != code {
            assert_eq!(verify(&secret, &theirs, now, 0), Err(CodeRefusal::Wrong));
        }
        for junk in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(verify(&secret, junk, now, 0), Err(CodeRefusal::Malformed), "{junk}");
        }
    }

    #[test]
    fn the_provisioning_uri_names_the_approver_and_the_secret() {
        let secret = generate().unwrap();
        let (uri, base32) = provisioning(&secret, "alice");
        assert!(uri.starts_with("otpauth://totp/valetkey:alice?"), "{}", *uri);
        assert!(uri.contains(&format!("secret={}", *base32)));
        assert_eq!(base32.len(), 32);
    }
}
