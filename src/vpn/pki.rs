//! The run's throwaway certificate authority, for IPsec with certificates
//! and for OpenVPN: certificates made with openssl from fixed keys, once
//! per process and identity, and written into each run's directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::lab::{LabError, Result};

/// The certificates an endpoint presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The endpoint's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A throwaway CA and host certificates in a run's directory `dir`, made
/// with openssl once per process (see [`CertCache`]).
///
/// The CA signs with a fixed RSA 3072 key and every host certificate
/// carries another ([`LAB_KEYS`]), so no run waits for key generation and
/// IKE_AUTH messages are large (they cross the router as IP fragments).
pub struct TestPki {
    /// The CA certificate.
    pub ca: PathBuf,
    dir: PathBuf,
}

/// The CA's and the hosts' private keys (PEM): public test fixtures that
/// secure nothing (see `src/vpn/lab-pki/README.md`).
pub const LAB_KEYS: (&str, &str) = (include_str!("lab-pki/ca.key"), include_str!("lab-pki/host.key"));

/// The certificates openssl made in this process: the CA's and each
/// identity's (PEM). Every run's CA signs with the same key, so one CA
/// certificate serves every run of a process, and openssl (a tenth of a
/// suite's CPU when each run made its own) runs once per identity.
struct CertCache {
    ca_made_at: SystemTime,
    ca: String,
    certs: HashMap<String, String>,
}

/// The certificates last `-days 2`; a process older than this makes new ones.
const REMADE_AFTER: Duration = Duration::from_secs(12 * 3600);

static CERTS: Mutex<Option<CertCache>> = Mutex::new(None);

fn cache() -> std::sync::MutexGuard<'static, Option<CertCache>> {
    CERTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_pem(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| LabError::io(format!("reading {}", path.display()), e))
}

fn write_pem(path: &Path, pem: &str) -> Result<()> {
    std::fs::write(path, pem).map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

impl TestPki {
    /// The CA, in `dir`: its key, and its certificate (made by openssl the
    /// first time in this process).
    pub fn new(dir: &Path) -> Result<TestPki> {
        crate::prereq::require_tool("openssl")?;
        let (ca_key, _) = LAB_KEYS;
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        write_key(&dir.join("ca.key"), ca_key)?;
        let ca = dir.join("ca.crt");
        // Held while openssl runs: every run of the process gets one CA.
        let mut cache = cache();
        // Wall-clock age: a machine that slept still ages its certificates.
        let fresh = |m: &&CertCache| m.ca_made_at.elapsed().is_ok_and(|age| age < REMADE_AFTER);
        match cache.as_ref().filter(fresh) {
            Some(m) => write_pem(&ca, &m.ca)?,
            None => {
                openssl(
                    dir,
                    &["req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "2"],
                    &["-subj", "/CN=vpn-passthrough test CA"],
                )?;
                *cache = Some(CertCache { ca_made_at: SystemTime::now(), ca: read_pem(&ca)?, certs: HashMap::new() });
            }
        }
        Ok(TestPki { ca, dir: dir.to_path_buf() })
    }

    /// A certificate and key for identity `name` (a DNS name in the SAN),
    /// signed by the CA.
    pub fn issue(&self, name: &str) -> Result<Credentials> {
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if name.is_empty() || !name.chars().all(plain) || name.starts_with('.') {
            return Err(LabError::Input(format!(
                "certificate identity {name:?}: letters, digits, dots and hyphens only, not starting with a dot"
            )));
        }
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        write_key(&self.dir.join(&key), LAB_KEYS.1)?;
        let credentials = Credentials { ca: self.ca.clone(), cert: self.dir.join(&crt), key: self.dir.join(&key) };
        let ca = read_pem(&self.ca)?;
        let known = cache().as_ref().filter(|m| m.ca == ca).and_then(|m| m.certs.get(name).cloned());
        if let Some(pem) = known {
            write_pem(&credentials.cert, &pem)?;
            return Ok(credentials);
        }
        std::fs::write(self.dir.join(&ext), format!("subjectAltName=DNS:{name}\n"))
            .map_err(|e| LabError::io("writing a certificate extension file", e))?;
        openssl(&self.dir, &["req", "-new", "-key", &key, "-out", &csr], &["-subj", &format!("/CN={name}")])?;
        openssl(
            &self.dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &crt],
            &["-days", "2", "-extfile", &ext],
        )?;
        let pem = read_pem(&credentials.cert)?;
        if let Some(m) = cache().as_mut().filter(|m| m.ca == ca) {
            m.certs.insert(name.to_string(), pem);
        }
        Ok(credentials)
    }
}

fn write_key(path: &Path, pem: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, pem.as_bytes()))
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

fn openssl(dir: &Path, args: &[&str], more: &[&str]) -> Result<()> {
    let out = duct::cmd("openssl", args.iter().chain(more))
        .dir(dir)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| LabError::io("running openssl", e))?;
    if !out.status.success() {
        return Err(LabError::Failed {
            host: "(this machine)".into(),
            command: format!("openssl {}", args.join(" ")),
            status: crate::lab::process::describe(out.status),
            output: format!(":\n{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}
