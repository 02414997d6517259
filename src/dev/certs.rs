//! Development and test certificates (`keygate certs dev DIR`, `keygate serve --dev`): a
//! development CA, a server certificate for localhost and 127.0.0.1 written as a full chain,
//! and client certificates for every mTLS outcome. Never for production (see certs/README.md).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// The name KMS's client certificate carries in us-east-1.
pub const DEFAULT_CLIENT_NAME: &str = "cks.kms.us-east-1.amazonaws.com";

/// Why development certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `write_dev_set` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevOptions {
    /// CN and SAN of the valid client certificate.
    pub client_name: String,
    /// SANs of the server certificate (the first is also its CN).
    pub server_names: Vec<String>,
    /// Validity of the server and valid client certificates.
    pub days: i64,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            client_name: DEFAULT_CLIENT_NAME.to_owned(),
            server_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            days: 365,
        }
    }
}

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files `write_dev_set` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSet {
    /// The development CA (trust it with `curl --cacert`, use it as `tls.client_ca`).
    pub ca: Pair,
    /// Server certificate + CA as a full chain, and its key.
    pub server: Pair,
    /// CN and SAN equal to the configured client name, signed by the CA.
    pub client: Pair,
    pub client_wrong_name: Pair,
    pub client_expired: Pair,
    pub client_self_signed: Pair,
    /// Right name, signed by `other_ca`.
    pub client_other_ca: Pair,
    pub other_ca: Pair,
}

/// A certificate in PEM and its private key in PEM (wiped when dropped).
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// A development CA held in memory.
#[derive(Debug)]
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl DevCa {
    pub fn generate(common_name: &str) -> Result<DevCa, CertsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "keygate development");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity(-1, 3650);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(DevCa {
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.issuer.key().serialize_pem())
    }

    /// A server certificate for `names` (IP addresses become IP SANs), leaf only.
    pub fn issue_server(&self, names: &[String], days: i64) -> Result<Issued, CertsError> {
        let cn = names.first().map_or("localhost", String::as_str);
        leaf(
            names,
            cn,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity(-1, days),
            Some(self),
        )
    }

    /// A client certificate with `name` as CN and SAN, valid from `from_days` to `to_days`
    /// relative to now (negative numbers lie in the past).
    pub fn issue_client(
        &self,
        name: &str,
        from_days: i64,
        to_days: i64,
    ) -> Result<Issued, CertsError> {
        let names = [name.to_owned()];
        leaf(
            &names,
            name,
            ExtendedKeyUsagePurpose::ClientAuth,
            validity(from_days, to_days),
            Some(self),
        )
    }
}

/// A self-signed client certificate with `name` as CN and SAN.
pub fn self_signed_client(name: &str, days: i64) -> Result<Issued, CertsError> {
    let names = [name.to_owned()];
    leaf(
        &names,
        name,
        ExtendedKeyUsagePurpose::ClientAuth,
        validity(-1, days),
        None,
    )
}

fn leaf(
    names: &[String],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ca: Option<&DevCa>,
) -> Result<Issued, CertsError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = ca.is_some();
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = match ca {
        Some(ca) => params.signed_by(&key, &ca.issuer)?,
        None => params.self_signed(&key)?,
    };
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

fn validity(from_days: i64, to_days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now + Duration::days(from_days),
        now + Duration::days(to_days),
    )
}

/// Writes the whole development set into `dir` (created if missing), replacing older files.
pub fn write_dev_set(dir: &Path, opts: &DevOptions) -> Result<DevSet, CertsError> {
    create_dir(dir)?;
    let name = opts.client_name.as_str();
    let ca = DevCa::generate("keygate development CA")?;
    let other = DevCa::generate("keygate other CA")?;
    let server = write_server(dir, "server", &ca, &opts.server_names, opts.days)?;
    let set = DevSet {
        ca: write_ca(dir, "ca", &ca)?,
        server,
        client: write_issued(dir, "client", &ca.issue_client(name, -1, opts.days)?)?,
        client_wrong_name: write_issued(
            dir,
            "client-wrong-name",
            &ca.issue_client("wrong-name.example.com", -1, opts.days)?,
        )?,
        client_expired: write_issued(dir, "client-expired", &ca.issue_client(name, -30, -1)?)?,
        client_self_signed: write_issued(
            dir,
            "client-self-signed",
            &self_signed_client(name, opts.days)?,
        )?,
        client_other_ca: write_issued(
            dir,
            "client-other-ca",
            &other.issue_client(name, -1, opts.days)?,
        )?,
        other_ca: write_ca(dir, "other-ca", &other)?,
    };
    Ok(set)
}

/// Writes `NAME.pem` (leaf followed by the CA: the full chain) and `NAME.key`.
pub fn write_server(
    dir: &Path,
    name: &str,
    ca: &DevCa,
    names: &[String],
    days: i64,
) -> Result<Pair, CertsError> {
    let issued = ca.issue_server(names, days)?;
    let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
    write_pair(dir, name, &chain, &issued.key_pem)
}

fn write_ca(dir: &Path, name: &str, ca: &DevCa) -> Result<Pair, CertsError> {
    write_pair(dir, name, ca.cert_pem(), &ca.key_pem())
}

fn write_issued(dir: &Path, name: &str, issued: &Issued) -> Result<Pair, CertsError> {
    write_pair(dir, name, &issued.cert_pem, &issued.key_pem)
}

fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> Result<Pair, CertsError> {
    let pair = Pair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    write_file(&pair.key, key_pem.as_bytes(), 0o600)?;
    write_file(&pair.cert, cert_pem.as_bytes(), 0o644)?;
    Ok(pair)
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes through a temporary file created with `mode` and renamed into place, so a key is
/// never readable by others, not even briefly, and a reader never sees half a file.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// The development server certificate kept in `dir` for `serve --dev`: reused while it is
/// valid and matches its key, otherwise a new CA and server certificate are written.
/// Returns the server pair and the CA certificate to give to clients.
pub fn ensure_dev_server(dir: &Path) -> Result<(Pair, PathBuf), CertsError> {
    // The files are checked as a config names them; a relative `dir` would be joined onto
    // itself (and the certificate remade at every start).
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let dir = absolute.as_path();
    let server = Pair {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let ca_cert = dir.join("ca.pem");
    let toml = crate::server::tls::TlsToml {
        cert_chain: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        ..Default::default()
    };
    if ca_cert.is_file() && toml.check(dir).is_ok() {
        return Ok((server, ca_cert));
    }
    create_dir(dir)?;
    let ca = DevCa::generate("keygate development CA")?;
    let opts = DevOptions::default();
    let server = write_server(dir, "server", &ca, &opts.server_names, opts.days)?;
    let ca = write_ca(dir, "ca", &ca)?;
    Ok((server, ca.cert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn dev_set_has_every_kind_of_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let set = write_dev_set(dir.path(), &DevOptions::default()).unwrap();
        let chain = pem_certs(&set.server.cert);
        assert_eq!(chain.len(), 2, "server.pem is leaf + CA");
        assert_eq!(chain[1], pem_certs(&set.ca.cert)[0]);
        let (_, server) = X509Certificate::from_der(&chain[0]).unwrap();
        let san = format!(
            "{:?}",
            server.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            san.contains("localhost") && san.contains("[127, 0, 0, 1]"),
            "{san}"
        );

        let cn = |p: &Path| {
            let der = pem_certs(p).remove(0);
            let (_, c) = X509Certificate::from_der(&der).unwrap();
            let cn = c
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned();
            (cn, c.validity().is_valid(), c.subject() == c.issuer())
        };
        assert_eq!(
            cn(&set.client.cert),
            (DEFAULT_CLIENT_NAME.into(), true, false)
        );
        assert_eq!(cn(&set.client_wrong_name.cert).0, "wrong-name.example.com");
        assert_eq!(
            cn(&set.client_expired.cert),
            (DEFAULT_CLIENT_NAME.into(), false, false)
        );
        assert_eq!(
            cn(&set.client_self_signed.cert),
            (DEFAULT_CLIENT_NAME.into(), true, true)
        );
        assert_eq!(
            cn(&set.client_other_ca.cert),
            (DEFAULT_CLIENT_NAME.into(), true, false)
        );
        assert_ne!(pem_certs(&set.other_ca.cert), pem_certs(&set.ca.cert));

        for pair in [
            &set.ca,
            &set.server,
            &set.client,
            &set.client_expired,
            &set.other_ca,
        ] {
            assert_eq!(mode(&pair.key), 0o600, "{}", pair.key.display());
            assert_eq!(mode(&pair.cert) & 0o600, 0o600);
        }
    }

    #[test]
    fn ensure_dev_server_reuses_a_good_certificate_and_replaces_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (first, ca) = ensure_dev_server(dir.path()).unwrap();
        let pem = fs::read(&first.cert).unwrap();
        let (again, _) = ensure_dev_server(dir.path()).unwrap();
        assert_eq!(
            fs::read(&again.cert).unwrap(),
            pem,
            "a valid certificate is kept"
        );
        assert!(ca.is_file());

        fs::write(&first.key, "garbage").unwrap();
        let (fresh, _) = ensure_dev_server(dir.path()).unwrap();
        assert_ne!(
            fs::read(&fresh.cert).unwrap(),
            pem,
            "a broken pair is replaced"
        );
        assert_eq!(mode(&fresh.key), 0o600);
    }
}
