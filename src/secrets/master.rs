//! The master key: where it comes from, and the keys derived from it.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

use super::SecretsError;

const KEY_LEN: usize = 32;

/// The root of everything the broker keeps encrypted. Only derived keys are
/// kept; the raw bytes are zeroized as soon as they are derived from.
pub struct MasterKey {
    sealing: LessSafeKey,
    /// For fingerprints of secrets the broker must recognise again but never
    /// keep (a provider token that leaked to an agent).
    fingerprinting: ring::hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeyOrigin {
    Env,
    File(PathBuf),
    Created(PathBuf),
}

impl fmt::Display for MasterKeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeyOrigin::Env => f.write_str("VALETKEY_MASTER_KEY"),
            MasterKeyOrigin::File(p) => write!(f, "file {}", p.display()),
            MasterKeyOrigin::Created(p) => write!(f, "new file {}", p.display()),
        }
    }
}

/// Where to look for the master key.
pub struct MasterKeySettings<'a> {
    /// The value of VALETKEY_MASTER_KEY, if set.
    pub env: Option<Zeroizing<String>>,
    pub file: &'a Path,
    /// Create the file when there is no key (development only).
    pub create: bool,
}

impl MasterKey {
    fn from_bytes(raw: &[u8; KEY_LEN]) -> MasterKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"valetkey master key v1").extract(raw);
        let okm = prk
            .expand(&[b"seal records"], &AES_256_GCM)
            .expect("AES-256-GCM key length is a valid HKDF output length");
        let fingerprinting: ring::hmac::Key = prk
            .expand(&[b"fingerprint secrets"], ring::hmac::HMAC_SHA256)
            .expect("HMAC-SHA256 key length is a valid HKDF output length")
            .into();
        MasterKey {
            sealing: LessSafeKey::new(UnboundKey::from(okm)),
            fingerprinting,
        }
    }

    /// A keyed fingerprint of a secret: equal secrets give equal
    /// fingerprints under one master key, and the fingerprint cannot be
    /// turned back into the secret or checked against a guess without the key.
    pub fn fingerprint(&self, secret: &str) -> String {
        let tag = ring::hmac::sign(&self.fingerprinting, secret.as_bytes());
        format!("hmac-sha256:{}", hex::encode(&tag.as_ref()[..16]))
    }

    /// Names this key without revealing it: what the store records, to
    /// refuse a broker started with another key.
    pub fn key_id(&self) -> String {
        self.fingerprint("valetkey master key id v1")
    }

    pub(super) fn sealing(&self) -> &LessSafeKey {
        &self.sealing
    }

    /// Parses base64 of 32 bytes.
    pub fn from_base64(text: &str, origin: MasterKeyOrigin) -> Result<MasterKey, SecretsError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SecretsError::MasterKeyInvalid { origin: origin.clone() })?,
        );
        let raw: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SecretsError::MasterKeyInvalid { origin })?,
        );
        Ok(MasterKey::from_bytes(&raw))
    }

    /// A new random key, and its base64 text to keep somewhere safe.
    pub fn generate() -> Result<(MasterKey, Zeroizing<String>), SecretsError> {
        use ring::rand::SecureRandom;
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        ring::rand::SystemRandom::new()
            .fill(raw.as_mut())
            .map_err(|_| SecretsError::Random)?;
        Ok((
            MasterKey::from_bytes(&raw),
            Zeroizing::new(STANDARD.encode(raw.as_ref())),
        ))
    }

    /// Finds the master key: the environment first, then the file; creates
    /// the file (mode 0600) only when asked to.
    pub fn load(settings: MasterKeySettings<'_>) -> Result<(MasterKey, MasterKeyOrigin), SecretsError> {
        if let Some(value) = settings.env {
            return Ok((
                MasterKey::from_base64(&value, MasterKeyOrigin::Env)?,
                MasterKeyOrigin::Env,
            ));
        }
        let file = settings.file;
        match std::fs::metadata(file) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretsError::MasterKeyExposed {
                        file: file.to_owned(),
                        mode,
                    });
                }
                let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|source| SecretsError::Io {
                    action: "read",
                    path: file.to_owned(),
                    source,
                })?);
                let origin = MasterKeyOrigin::File(file.to_owned());
                Ok((MasterKey::from_base64(&text, origin.clone())?, origin))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !settings.create {
                    return Err(SecretsError::MasterKeyMissing { file: file.to_owned() });
                }
                let (key, text) = MasterKey::generate()?;
                write_private(file, text.as_bytes())?;
                Ok((key, MasterKeyOrigin::Created(file.to_owned())))
            }
            Err(source) => Err(SecretsError::Io {
                action: "read",
                path: file.to_owned(),
                source,
            }),
        }
    }
}

/// Where a rotation writes the next master key before the store is
/// re-sealed under it: beside the key file, renamed over it once done.
pub fn next_key_file(file: &Path) -> std::path::PathBuf {
    let mut next = file.as_os_str().to_owned();
    next.push(".next");
    next.into()
}

/// Writes a new file readable by its owner only; never overwrites one.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), SecretsError> {
    let io = |source| SecretsError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: &Path, create: bool) -> MasterKeySettings<'_> {
        MasterKeySettings {
            env: None,
            file,
            create,
        }
    }

    #[test]
    fn a_missing_key_is_an_error_unless_creation_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        let err = MasterKey::load(settings(&file, false)).unwrap_err();
        assert!(err.to_string().contains("VALETKEY_MASTER_KEY"), "{err}");
        assert!(err.to_string().contains("master_key_file"), "{err}");
        assert!(!file.exists());

        let (created, origin) = MasterKey::load(settings(&file, true)).unwrap();
        assert_eq!(origin, MasterKeyOrigin::Created(file.clone()));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        // The same file gives the same key: what one sealed, the other opens.
        let (loaded, origin) = MasterKey::load(settings(&file, true)).unwrap();
        assert_eq!(origin, MasterKeyOrigin::File(file.clone()));
        let sealed = created.seal("r", b"x").unwrap();
        assert_eq!(&loaded.open("r", &sealed).unwrap()[..], b"x");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        MasterKey::load(settings(&file, true)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load(settings(&file, false)).unwrap_err();
        assert!(
            matches!(err, SecretsError::MasterKeyExposed { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_environment_wins_and_must_be_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("absent.key");
        let (_, text) = MasterKey::generate().unwrap();
        let env = |v: &str| MasterKeySettings {
            env: Some(Zeroizing::new(v.to_owned())),
            file: &file,
            create: false,
        };
        assert_eq!(MasterKey::load(env(&text)).unwrap().1, MasterKeyOrigin::Env);
        assert!(matches!(
            MasterKey::load(env("c2hvcnQ=")),
            Err(SecretsError::MasterKeyInvalid { .. })
        ));
    }
}
