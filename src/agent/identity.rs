//! The lab's PKI: one CA per lab (made by `up`), one certificate per node
//! naming the node (DNS SAN) and its addresses (IP SANs). Private keys are
//! P-256, written 0600 in the lab's state folder and read by each agent before
//! it drops its privileges.
//!
//! Layout under the lab's state folder: `pki/ca.pem`, `pki/ca.key`,
//! `pki/nodes/<node>.pem`, `pki/nodes/<node>.key`.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};

use crate::lab::state;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("making the lab's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("certificate is not a valid X.509 end-entity certificate: {0}")]
    Certificate(webpki::Error),
    #[error("certificate key is not a P-256 public key")]
    NotP256,
    #[error("node {0}'s private key is not a P-256 PKCS#8 key")]
    BadKey(String),
}

pub fn pki_dir(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("pki")
}

pub fn ca_path(lab: &str) -> PathBuf {
    pki_dir(lab).join("ca.pem")
}

/// Where every node's certificate and key are.
pub fn nodes_dir(lab: &str) -> PathBuf {
    pki_dir(lab).join("nodes")
}

pub fn cert_path(lab: &str, node: &str) -> PathBuf {
    nodes_dir(lab).join(format!("{node}.pem"))
}

pub fn key_path(lab: &str, node: &str) -> PathBuf {
    nodes_dir(lab).join(format!("{node}.key"))
}

/// Another node's certificate (read before dropping root: the lab's state
/// folder is root's).
pub fn load_cert(lab: &str, node: &str) -> Result<CertificateDer<'static>, IdentityError> {
    read_cert(&cert_path(lab, node))
}

/// Every node with a certificate in the lab (the stems of
/// `pki/nodes/*.pem`), sorted.
pub fn certified_nodes(lab: &str) -> Result<Vec<String>, IdentityError> {
    let dir = nodes_dir(lab);
    let entries = fs::read_dir(&dir).map_err(|source| IdentityError::File {
        path: dir.clone(),
        source,
    })?;
    let mut nodes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".pem").map(str::to_string)
        })
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// A node to certify: its name and every address it has.
pub struct Subject<'a> {
    pub name: &'a str,
    pub addrs: Vec<IpAddr>,
}

/// Make the lab's CA and a certificate for every subject. The CA is valid for
/// the lab only: its name carries the lab's name, and no other lab trusts it.
pub fn issue(lab: &str, subjects: &[Subject]) -> Result<(), IdentityError> {
    let dir = pki_dir(lab);
    let nodes = nodes_dir(lab);
    fs::create_dir_all(&nodes).map_err(|source| IdentityError::File {
        path: nodes.clone(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("testbed lab {lab} CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), 0o644)?;
    write(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let issuer = Issuer::new(ca, ca_key);
    // Key generation dominates for a thousand nodes: one chunk per CPU.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = subjects.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = subjects
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().try_for_each(|s| certify(lab, s, &issuer))))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

/// A key and a certificate for one node, signed by the lab's CA.
fn certify(lab: &str, s: &Subject, issuer: &Issuer<'_, KeyPair>) -> Result<(), IdentityError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![s.name.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, s.name);
    params
        .subject_alt_names
        .extend(s.addrs.iter().map(|a| SanType::IpAddress(*a)));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer)?;
    write(&cert_path(lab, s.name), cert.pem().as_bytes(), 0o644)?;
    write(
        &key_path(lab, s.name),
        key.serialize_pem().as_bytes(),
        0o600,
    )
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| IdentityError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// A node's credentials, as an agent holds them after reading its files.
pub struct Identity {
    pub node: String,
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The lab's CA certificate: the only trust anchor.
    pub ca: CertificateDer<'static>,
}

impl Identity {
    /// Read `node`'s certificate and key and the lab's CA (needs root: the
    /// key is 0600).
    pub fn load(lab: &str, node: &str) -> Result<Identity, IdentityError> {
        Identity::from_files(
            node,
            &cert_path(lab, node),
            &key_path(lab, node),
            &ca_path(lab),
        )
    }

    /// Credentials from any files (a rogue client in a test brings its own).
    pub fn from_files(
        node: &str,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<Identity, IdentityError> {
        Ok(Identity {
            node: node.to_string(),
            cert: read_cert(cert)?,
            key: PrivatePkcs8KeyDer::from_pem_file(key).map_err(|_| IdentityError::Pem {
                path: key.to_path_buf(),
                what: "PKCS#8 private key",
            })?,
            ca: read_cert(ca)?,
        })
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The certificate's key, for application-layer key agreement.
    pub fn secret_key(&self) -> Result<p256::SecretKey, IdentityError> {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_der(self.key.secret_pkcs8_der())
            .map_err(|_| IdentityError::BadKey(self.node.clone()))
    }
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    CertificateDer::from_pem_file(path).map_err(|_| IdentityError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
    })
}

/// The P-256 public key of a certificate.
pub fn public_key(cert: &CertificateDer) -> Result<p256::PublicKey, IdentityError> {
    use p256::pkcs8::DecodePublicKey;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(IdentityError::Certificate)?;
    let spki = ee.subject_public_key_info();
    p256::PublicKey::from_public_key_der(spki.as_ref()).map_err(|_| IdentityError::NotP256)
}

/// The node a certificate names (its first DNS SAN).
pub fn node_name(cert: &CertificateDer) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    ee.valid_dns_names().next().map(str::to_string)
}
