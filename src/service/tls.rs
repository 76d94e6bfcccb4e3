//! TLS with rustls: the listener's certificate (PEM files, or one the daemon makes itself and
//! keeps), reloadable without dropping a connection, and the client side of a `wss://` relay
//! link (system roots or a configured CA, always verified).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// File names of the certificate the daemon makes itself (`tls = "self-signed"`), inside the
/// state directory.
pub const SELF_SIGNED_CERT: &str = "tls-cert.pem";
pub const SELF_SIGNED_KEY: &str = "tls-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

fn file_error(file: &Path, message: impl fmt::Display) -> TlsError {
    TlsError::File {
        file: file.to_path_buf(),
        message: message.to_string(),
    }
}

/// The one cryptography provider (ring, as rcgen uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM files given by the owner (`tls_cert`, `tls_key`).
    Files { cert: PathBuf, key: PathBuf },
    /// Made at first start, kept in the state directory, for these names and addresses.
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

/// A certificate ready to serve, with what the daemon says about it.
pub struct Loaded {
    key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate, `AB:CD:…` (what a browser shows).
    pub fingerprint: String,
    /// The DNS names and addresses the leaf certificate is valid for.
    pub names: Vec<String>,
}

impl CertSource {
    /// Reads the certificate (making and saving the self-signed one when there is none yet).
    pub fn load(&self) -> Result<Loaded, TlsError> {
        let (cert_file, key_file) = match self {
            CertSource::Files { cert, key } => (cert.clone(), key.clone()),
            CertSource::SelfSigned { dir, names } => {
                let cert = dir.join(SELF_SIGNED_CERT);
                let key = dir.join(SELF_SIGNED_KEY);
                if !cert.exists() || !key.exists() {
                    make_self_signed(dir, names)?;
                }
                (cert, key)
            }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
            .map_err(|e| file_error(&cert_file, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(&cert_file, e))?;
        let Some(leaf) = chain.first() else {
            return Err(file_error(&cert_file, "no CERTIFICATE in it"));
        };
        let fingerprint = crate::session::identity::fingerprint_of_der(leaf)
            .trim_start_matches("sha-256 ")
            .to_string();
        let names = names_in(leaf);
        let key_der = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
            // The key's text never goes into the message.
            file_error(&key_file, format!("no readable private key ({e:?})"))
        })?;
        let key = CertifiedKey::from_der(chain, key_der, &provider())
            .map_err(|e| file_error(&key_file, format!("does not fit the certificate: {e}")))?;
        Ok(Loaded {
            key: Arc::new(key),
            fingerprint,
            names,
        })
    }
}

/// Makes a certificate for `names` (DNS names or addresses) and saves it with its key
/// (readable by the daemon only) in `dir`.
fn make_self_signed(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webrtcd");
    // Browsers cap what they accept for a publicly trusted certificate, not for one the
    // user accepted by hand; ten years spares a door station a surprise.
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let cert = params.self_signed(&key).map_err(generate)?;
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let key_file = dir.join(SELF_SIGNED_KEY);
    crate::session::identity::write_private(&key_file, &key.serialize_pem())
        .map_err(|e| file_error(&key_file, e))?;
    let cert_file = dir.join(SELF_SIGNED_CERT);
    crate::session::identity::write_private(&cert_file, &cert.pem())
        .map_err(|e| file_error(&cert_file, e))?;
    Ok(())
}

/// This year by the system clock, near enough for a validity counted in whole years (it
/// starts the year before, so a clock a little behind does not matter).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// The DNS names and IP addresses a certificate names (its subject alternative names).
fn names_in(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The names a self-signed certificate is made for when none are configured: this host's
/// name, `NAME.local` (what mDNS answers to), `localhost`, and the machine's addresses.
pub fn default_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = hostname() {
        names.push(format!("{host}.local"));
        names.push(host);
    }
    names.push("localhost".into());
    names.extend(local_addresses().into_iter().map(|a| a.to_string()));
    names.dedup();
    names
}

/// This machine's host name (first label), if it has one.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    let first = name.split('.').next()?.trim().to_ascii_lowercase();
    (!first.is_empty() && first != "localhost").then_some(first)
}

/// The addresses of this machine's interfaces (loopback included).
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
                        // Link-local addresses need a zone a URL cannot carry well.
                        if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.sort();
    out.dedup();
    out
}

/// The listener's certificate, swapped in place on reload: connections already open keep the
/// one they started with; the next handshake gets the new one.
pub struct Reloadable {
    source: CertSource,
    current: RwLock<Arc<CertifiedKey>>,
    names: RwLock<Vec<String>>,
}

impl fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Reloadable")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloadable {
    pub fn new(source: CertSource) -> Result<(Arc<Reloadable>, Loaded), TlsError> {
        let loaded = source.load()?;
        let reloadable = Arc::new(Reloadable {
            source,
            current: RwLock::new(Arc::clone(&loaded.key)),
            names: RwLock::new(loaded.names.clone()),
        });
        Ok((reloadable, loaded))
    }

    /// Reads the certificate again; on error the old one stays in use.
    pub fn reload(&self) -> Result<Loaded, TlsError> {
        let loaded = self.source.load()?;
        *crate::sync::write(&self.current) = Arc::clone(&loaded.key);
        *crate::sync::write(&self.names) = loaded.names.clone();
        Ok(loaded)
    }

    /// The names the certificate in use is valid for (allowed as `Host`).
    pub fn names(&self) -> Vec<String> {
        crate::sync::read(&self.names).clone()
    }

    /// A server configuration that always serves the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&crate::sync::read(&self.current)))
    }
}

/// The client side of a `wss://` relay link: the system's trusted roots, or only the CA
/// certificates in `ca_file` when one is configured. Certificates are always verified.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| file_error(file, e))? {
                let cert = cert.map_err(|e| file_error(file, e))?;
                roots.add(cert).map_err(|e| file_error(file, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(file, "no CERTIFICATE in it"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted root certificates found on this system (package ca-certificates?); \
                     wss:// relays will be refused unless relay_ca is set"
                );
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned {
            dir: dir.path().to_path_buf(),
            names: vec!["door.local".into(), "192.168.1.20".into()],
        };
        let first = source.load().unwrap();
        assert_eq!(first.names, ["door.local", "192.168.1.20"]);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let again = source.load().unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "kept across restarts");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SELF_SIGNED_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by the daemon only");
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let made = CertSource::SelfSigned {
            dir: dir.path().join("a"),
            names: vec!["a.test".into()],
        };
        made.load().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::copy(dir.path().join("a").join(SELF_SIGNED_CERT), &cert).unwrap();
        std::fs::copy(dir.path().join("a").join(SELF_SIGNED_KEY), &key).unwrap();
        let (tls, first) = Reloadable::new(CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap();
        assert_eq!(tls.names(), ["a.test"]);
        CertSource::SelfSigned {
            dir: dir.path().join("b"),
            names: vec!["b.test".into()],
        }
        .load()
        .unwrap();
        std::fs::copy(dir.path().join("b").join(SELF_SIGNED_CERT), &cert).unwrap();
        // The new certificate with the old key: refused, the old pair stays.
        let err = tls.reload().err().expect("a mismatched key is refused");
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert_eq!(tls.names(), ["a.test"]);
        std::fs::copy(dir.path().join("b").join(SELF_SIGNED_KEY), &key).unwrap();
        let second = tls.reload().unwrap();
        assert_ne!(first.fingerprint, second.fingerprint);
        assert_eq!(tls.names(), ["b.test"]);
    }

    #[test]
    fn default_names_include_loopback() {
        let names = default_names();
        assert!(names.contains(&"localhost".to_string()), "{names:?}");
        assert!(names.contains(&"127.0.0.1".to_string()), "{names:?}");
    }

    #[test]
    fn a_missing_ca_file_is_an_error() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).expect_err("error");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
