//! The daemon's DTLS identity: one ECDSA P-256 certificate, generated once, kept in the state
//! directory, shared by every call.
//!
//! Why: GStreamer 1.22 generates an RSA-2048 certificate per process on the first call (slow,
//! and stacks that offer only ECDHE-ECDSA suites fail against it with "no shared cipher"), and
//! its fingerprint changes at every restart so nobody can pin it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// File name of the identity (certificate + PKCS#8 key, PEM) inside the state directory.
pub const IDENTITY_FILE: &str = "dtls-identity.pem";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

#[derive(Debug, Clone)]
pub struct DtlsIdentity {
    /// Certificate and private key, PEM: what dtlsdec's `pem` property takes.
    pem: String,
    /// `sha-256 AB:CD:...`, as it appears after `a=fingerprint:`.
    fingerprint: String,
}

impl DtlsIdentity {
    /// Loads the identity from `state_dir`, creating (and saving) one when there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<DtlsIdentity, IdentityError> {
        let file = state_dir.join(IDENTITY_FILE);
        let err = |message: String| IdentityError::File {
            file: file.clone(),
            message,
        };
        match std::fs::read_to_string(&file) {
            Ok(pem) => DtlsIdentity::from_pem(pem).map_err(err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = DtlsIdentity::generate()?;
                std::fs::create_dir_all(state_dir).map_err(|e| err(e.to_string()))?;
                write_private(&file, &identity.pem).map_err(|e| err(e.to_string()))?;
                Ok(identity)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// A fresh P-256 identity, not saved anywhere.
    pub fn generate() -> Result<DtlsIdentity, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec!["webrtcd".to_string()])
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "webrtcd");
        // WebRTC peers check the fingerprint, not the validity period: make it long-lived.
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params
            .self_signed(&key)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        DtlsIdentity::from_pem(pem).map_err(IdentityError::Generate)
    }

    fn from_pem(pem: String) -> Result<DtlsIdentity, String> {
        let blocks = ::pem::parse_many(&pem).map_err(|e| format!("not PEM: {e}"))?;
        let cert = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or("no CERTIFICATE block")?;
        if !blocks.iter().any(|b| b.tag().ends_with("PRIVATE KEY")) {
            return Err("no PRIVATE KEY block".into());
        }
        let fingerprint = fingerprint_of_der(cert.contents());
        Ok(DtlsIdentity { pem, fingerprint })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// `sha-256 AB:CD:…`
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The SDP fingerprint (`sha-256 AB:CD:…`) of a DER certificate.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha-256 {}", hex.join(":"))
}

/// The fingerprint of the first certificate in a PEM text (what dtlsdec reports as `pem`).
pub fn fingerprint_of_pem(pem: &str) -> Option<String> {
    ::pem::parse_many(pem)
        .ok()?
        .iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| fingerprint_of_der(b.contents()))
}

pub(crate) fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let first = DtlsIdentity::load_or_create(dir.path()).unwrap();
        let again = DtlsIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(first.fingerprint().starts_with("sha-256 "));
        assert_eq!(first.fingerprint().len(), "sha-256 ".len() + 32 * 3 - 1);
        assert_eq!(
            fingerprint_of_pem(first.pem()).as_deref(),
            Some(first.fingerprint())
        );
        let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600, "the key is private");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "garbage").unwrap();
        let err = DtlsIdentity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(IDENTITY_FILE), "{err}");
    }
}
