//! The run's throwaway certificate authority, for IPsec with certificates
//! and for OpenVPN: certificates made with openssl per run, from fixed keys.

use std::path::{Path, PathBuf};

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

/// A throwaway CA and host certificates, made with openssl in `dir`.
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

impl TestPki {
    /// Makes a CA.
    pub fn new(dir: &Path) -> Result<TestPki> {
        crate::prereq::require_tool("openssl")?;
        let (ca_key, _) = LAB_KEYS;
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        write_key(&dir.join("ca.key"), ca_key)?;
        let ca = dir.join("ca.crt");
        openssl(
            dir,
            &["req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "2"],
            &["-subj", "/CN=vpn-passthrough test CA"],
        )?;
        Ok(TestPki { ca, dir: dir.to_path_buf() })
    }

    /// A certificate and key for identity `name` (a DNS name in the SAN).
    pub fn issue(&self, name: &str) -> Result<Credentials> {
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        std::fs::write(self.dir.join(&ext), format!("subjectAltName=DNS:{name}\n"))
            .map_err(|e| LabError::io("writing a certificate extension file", e))?;
        write_key(&self.dir.join(&key), LAB_KEYS.1)?;
        openssl(&self.dir, &["req", "-new", "-key", &key, "-out", &csr], &["-subj", &format!("/CN={name}")])?;
        openssl(
            &self.dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &crt],
            &["-days", "2", "-extfile", &ext],
        )?;
        Ok(Credentials { ca: self.ca.clone(), cert: self.dir.join(crt), key: self.dir.join(key) })
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
