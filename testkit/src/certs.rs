//! Certificates made for a test with the `openssl` tool: a CA, and a
//! server certificate it signed for `127.0.0.1` and `localhost`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate and key it signed, as PEM files.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA's certificate (what clients verify against).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Certs {
    /// The mariadbd options that make a server offer TLS with these.
    pub fn server_options(&self) -> Vec<String> {
        vec![
            format!("--ssl-cert={}", self.cert.display()),
            format!("--ssl-key={}", self.key.display()),
            format!("--ssl-ca={}", self.ca.display()),
        ]
    }

    /// Runs sysbench like [`crate::sysbench`], over TLS (`--mysql-ssl=on`).
    /// sysbench 1.0.20 takes no file options: it reads `cacert.pem`,
    /// `client-cert.pem` and `client-key.pem` from the directory it runs
    /// in, so they are copied next to the certificates and it runs there.
    /// (Servers here ask for no client certificate: any will do.)
    pub fn sysbench(&self, port: u16, args: &[&str]) -> std::process::Output {
        let dir = self.ca.parent().expect("certificates live in a directory");
        for (from, to) in [
            (&self.ca, "cacert.pem"),
            (&self.cert, "client-cert.pem"),
            (&self.key, "client-key.pem"),
        ] {
            std::fs::copy(from, dir.join(to)).expect("copy for sysbench");
        }
        crate::sysbench_command(port, args)
            .arg("--mysql-ssl=on")
            .current_dir(dir)
            .output()
            .expect("run sysbench")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(crate::need("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a server certificate (P-256 keys, valid two days) in a
/// new scratch directory named after `tag`.
pub fn make(tag: &str) -> Certs {
    let dir = crate::scratch(tag);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=zeroDB test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write san.ext");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}
