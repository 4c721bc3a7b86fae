//! The forward proxy's certificate authority: made once per store (its key
//! sealed under the master key, so every broker on the store serves the
//! same CA), and the short-lived leaf certificates it issues for provider
//! hosts, cached per host. The CA's key never leaves this module: nothing
//! answers it, logs it or writes it anywhere but sealed into the store.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::secrets::{MasterKey, SecretsError};
use crate::store::{CaRecord, Store, StoreError};
use crate::time::unix_secs;

/// How long a CA is valid; `valetkey ca rotate` replaces it sooner.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A leaf is back-dated this much, for clients whose clocks lag.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// Most hosts with a leaf in memory at once.
const LEAF_CACHE: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot use the broker's CA `{id}`: {reason}")]
    Unusable { id: String, reason: String },
    #[error("cannot make a TLS configuration for `{host}`: {reason}")]
    Tls { host: String, reason: String },
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The record id a CA's key is sealed for.
pub fn ca_record_id(id: &str) -> String {
    format!("forward-ca:{id}")
}

/// One CA, opened: its certificate and the issuer that signs leaves.
struct Ca {
    id: String,
    cert_der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn open(record: &CaRecord, master: &MasterKey) -> Result<Ca, CaError> {
        let unusable = |reason: String| CaError::Unusable {
            id: record.id.clone(),
            reason,
        };
        let key_der = master.open(&ca_record_id(&record.id), &record.sealed)?;
        let key = KeyPair::try_from(key_der.as_slice()).map_err(|e| unusable(e.to_string()))?;
        let cert_der = CertificateDer::from(record.cert_der.clone());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| unusable(e.to_string()))?;
        Ok(Ca {
            id: record.id.clone(),
            pem: pem_of(&cert_der),
            cert_der,
            issuer,
        })
    }
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A fresh CA, its key sealed for the store.
fn generate(master: &MasterKey, now: SystemTime) -> Result<CaRecord, CaError> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "valetkey");
    name.push(
        DnType::CommonName,
        format!("valetkey forward proxy CA {}", &id[id.len() - 8..]),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = (now - LEAF_BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let cert = params.self_signed(&key)?;
    let pkcs8 = Zeroizing::new(key.serialize_der());
    Ok(CaRecord {
        sealed: master.seal(&ca_record_id(&id), &pkcs8)?,
        id,
        cert_der: cert.der().to_vec(),
        created_at: unix_secs(now),
    })
}

/// The CA the broker issues leaves with now, and the leaves it issued.
pub struct Authority {
    current: RwLock<Arc<Ca>>,
    /// Host → its TLS configuration (leaf and key), each dropped after half
    /// the leaf's life so that no client meets one near its end.
    leaves: moka::sync::Cache<String, Arc<rustls::ServerConfig>>,
    leaf_ttl: Duration,
}

impl Authority {
    /// Opens the store's CA, making it first if the store has none.
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        leaf_ttl: Duration,
        now: SystemTime,
    ) -> Result<Authority, CaError> {
        let record = match store.current_ca().await? {
            Some(record) => record,
            None => store.adopt_ca(&generate(master, now)?).await?,
        };
        let ca = Ca::open(&record, master)?;
        Ok(Authority {
            current: RwLock::new(Arc::new(ca)),
            leaves: moka::sync::Cache::builder()
                .max_capacity(LEAF_CACHE)
                .time_to_live(leaf_ttl / 2)
                .build(),
            leaf_ttl,
        })
    }

    /// Replaces the store's CA with a fresh one and uses it from now on.
    /// The caller holds the broker's sealing lock.
    pub async fn rotate(&self, store: &dyn Store, master: &MasterKey, now: SystemTime) -> Result<String, CaError> {
        let record = generate(master, now)?;
        store.rotate_ca(&record).await?;
        let ca = Ca::open(&record, master)?;
        let id = ca.id.clone();
        *self.current.write().expect("forward CA lock") = Arc::new(ca);
        self.leaves.invalidate_all();
        Ok(id)
    }

    fn ca(&self) -> Arc<Ca> {
        self.current.read().expect("forward CA lock").clone()
    }

    /// The CA's certificate, PEM: what clients add to their trust store.
    pub fn pem(&self) -> String {
        self.ca().pem.clone()
    }

    pub fn id(&self) -> String {
        self.ca().id.clone()
    }

    /// A TLS server configuration presenting a leaf for `host` (a name or
    /// an IP address), issued now if none is cached.
    pub fn server_config(&self, host: &str, now: SystemTime) -> Result<Arc<rustls::ServerConfig>, CaError> {
        if let Some(config) = self.leaves.get(host) {
            return Ok(config);
        }
        let config = Arc::new(self.issue(host, now)?);
        self.leaves.insert(host.to_owned(), config.clone());
        Ok(config)
    }

    fn issue(&self, host: &str, now: SystemTime) -> Result<rustls::ServerConfig, CaError> {
        let ca = self.ca();
        let tls = |reason: String| CaError::Tls {
            host: host.to_owned(),
            reason,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into().map_err(|e: rcgen::Error| tls(e.to_string()))?),
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = (now - LEAF_BACKDATE).into();
        // `config check` bounds the lifetime; a day if it did not.
        params.not_after = now
            .checked_add(self.leaf_ttl)
            .unwrap_or(now + Duration::from_secs(86_400))
            .into();
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &ca.issuer)?;
        let chain = vec![leaf.der().clone(), ca.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls(e.to_string()))?;
        // HTTP/1.1 inside the tunnel, as the broker's own listener speaks.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MasterKey;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn one_ca_per_store_its_key_sealed_and_leaves_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_in(dir.path()).await.unwrap();
        let (master, _) = MasterKey::generate().unwrap();
        let now = SystemTime::now();
        let first = Authority::load(&store, &master, Duration::from_secs(3600), now)
            .await
            .unwrap();
        let again = Authority::load(&store, &master, Duration::from_secs(3600), now)
            .await
            .unwrap();
        assert_eq!(
            first.pem(),
            again.pem(),
            "a second broker on the store serves the same CA"
        );

        // The key is stored sealed: its PKCS#8 bytes are nowhere in the row.
        let record = store.current_ca().await.unwrap().unwrap();
        let key = master.open(&ca_record_id(&record.id), &record.sealed).unwrap();
        assert!(
            !record
                .sealed
                .ciphertext
                .windows(32)
                .any(|w| key.windows(32).any(|k| k == w))
        );
        let (other, _) = MasterKey::generate().unwrap();
        assert!(
            Authority::load(&store, &other, Duration::from_secs(3600), now)
                .await
                .is_err()
        );

        // A leaf for a host verifies against the CA alone.
        let config = first.server_config("api.github.com", now).unwrap();
        assert!(Arc::ptr_eq(
            &config,
            &first.server_config("api.github.com", now).unwrap()
        ));
        let ip = first.server_config("127.0.0.1", now).unwrap();
        assert!(!Arc::ptr_eq(&config, &ip));

        let before = first.id();
        let rotated = first.rotate(&store, &master, now).await.unwrap();
        assert_ne!(before, rotated);
        assert_ne!(first.pem(), again.pem());
        assert_eq!(store.current_ca().await.unwrap().unwrap().id, rotated);
        assert!(!Arc::ptr_eq(
            &config,
            &first.server_config("api.github.com", now).unwrap()
        ));
    }
}
