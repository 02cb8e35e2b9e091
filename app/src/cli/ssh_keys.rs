//! The user's side of `vmr ssh`: the key pair vmr logs in with and the
//! host keys it has seen, all under `$XDG_CONFIG_HOME/vmr` (else
//! `~/.config/vmr`):
//!
//! - `ssh/id_ed25519` (0600) and `ssh/id_ed25519.pub`, made once with the
//!   system `ssh-keygen` the first time `run`, `create` or
//!   `ssh` needs them, unless the user names a key with `--identity`;
//! - `known_hosts.d/<vm>`, one file per VM, filled by ssh's
//!   `StrictHostKeyChecking=accept-new` and removed when the VM is removed
//!   or created again under the same name (its new host key is then
//!   accepted, not reported as an attack).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where vmr keeps its ssh files.
#[derive(Debug, Clone)]
pub struct SshHome {
    root: PathBuf,
}

/// A private key and its public line.
#[derive(Debug, Clone)]
pub struct SshIdentity {
    pub private: PathBuf,
    pub public: String,
}

impl SshHome {
    /// Under `config_dir/vmr`.
    pub fn in_config_dir(config_dir: &Path) -> Self {
        Self {
            root: config_dir.join("vmr"),
        }
    }

    /// The user's: `$XDG_CONFIG_HOME/vmr`, else `~/.config/vmr`.
    pub fn of_user() -> anyhow::Result<Self> {
        dirs::config_dir()
            .map(|dir| Self::in_config_dir(&dir))
            .context("cannot find your config directory: set XDG_CONFIG_HOME or HOME")
    }

    fn key_dir(&self) -> PathBuf {
        self.root.join("ssh")
    }

    /// The known_hosts file of VM `vm`.
    pub fn known_hosts(&self, vm: &str) -> PathBuf {
        self.root.join("known_hosts.d").join(vm)
    }

    /// Forgets the host keys of VM `vm` (nothing to forget is fine).
    pub fn forget_host(&self, vm: &str) -> anyhow::Result<()> {
        let path = self.known_hosts(vm);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    /// Makes the known_hosts directory (0700) so that ssh can write there.
    pub fn prepare_known_hosts(&self) -> anyhow::Result<()> {
        make_private_dir(&self.root)?;
        make_private_dir(&self.root.join("known_hosts.d"))
    }

    /// `identity` (its public half read from `<identity>.pub`), else vmr's
    /// own key, generated on first use.
    pub fn identity(&self, identity: Option<&Path>) -> anyhow::Result<SshIdentity> {
        let private = match identity {
            Some(path) => path.to_owned(),
            None => self.generated_key()?,
        };
        let mut public_path = private.clone().into_os_string();
        public_path.push(".pub");
        let public_path = PathBuf::from(public_path);
        let public = std::fs::read_to_string(&public_path).with_context(|| {
            format!(
                "cannot read the public key {} of identity {}",
                public_path.display(),
                private.display()
            )
        })?;
        let public = public.trim().to_owned();
        vmr_domain::cloudinit::SshPublicKey::parse("--identity", &public)
            .map_err(|e| anyhow::anyhow!("{}: {}", public_path.display(), e.reason))?;
        Ok(SshIdentity { private, public })
    }

    /// vmr's key, made once: generated in a directory of its own, then
    /// renamed into place, so two first uses at once end with one key.
    fn generated_key(&self) -> anyhow::Result<PathBuf> {
        let dir = self.key_dir();
        let key = dir.join("id_ed25519");
        if key.exists() {
            return Ok(key);
        }
        make_private_dir(&self.root)?;
        // A name no other vmr (process or thread) uses at the same time.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let scratch = self.root.join(format!(
            ".ssh-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        make_private_dir(&scratch)?;
        let scratch_key = scratch.join("id_ed25519");
        let made = scratch;
        let output = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "vmr", "-f"])
            .arg(&scratch_key)
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run ssh-keygen (install OpenSSH's client, e.g. openssh-client)")?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&made);
            anyhow::bail!(
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        if let Err(e) = std::fs::rename(&made, &dir) {
            let _ = std::fs::remove_dir_all(&made);
            // Another vmr made it meanwhile: use that one.
            if !key.exists() {
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
        Ok(key)
    }
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_and_private() {
        let home = tempfile::tempdir().unwrap();
        let ssh = SshHome::in_config_dir(home.path());
        let first = ssh.identity(None).unwrap();
        assert!(first.public.starts_with("ssh-ed25519 "), "{}", first.public);
        let mode = std::fs::metadata(&first.private)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ssh.identity(None).unwrap();
        assert_eq!(first.public, again.public);
        assert_eq!(first.private, home.path().join("vmr/ssh/id_ed25519"));
    }

    #[test]
    fn concurrent_first_uses_share_one_key() {
        let home = tempfile::tempdir().unwrap();
        let ssh = SshHome::in_config_dir(home.path());
        let keys: Vec<String> = std::thread::scope(|s| {
            let a = s.spawn(|| ssh.identity(None).unwrap().public);
            let b = s.spawn(|| ssh.identity(None).unwrap().public);
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(keys[0], keys[1]);
        assert_eq!(ssh.identity(None).unwrap().public, keys[0]);
    }

    #[test]
    fn a_named_identity_needs_its_public_half() {
        let home = tempfile::tempdir().unwrap();
        let ssh = SshHome::in_config_dir(home.path());
        let own = home.path().join("mine");
        std::fs::write(&own, "private").unwrap();
        let e = ssh.identity(Some(&own)).unwrap_err();
        assert!(format!("{e:#}").contains("mine.pub"), "{e:#}");
        std::fs::write(home.path().join("mine.pub"), "not a key\n").unwrap();
        let e = ssh.identity(Some(&own)).unwrap_err();
        assert!(e.to_string().contains("not an OpenSSH public key"), "{e}");
        let line = ssh.identity(None).unwrap().public;
        std::fs::write(home.path().join("mine.pub"), format!("{line}\n")).unwrap();
        let got = ssh.identity(Some(&own)).unwrap();
        assert_eq!(got.private, own);
        assert_eq!(got.public, line);
    }

    #[test]
    fn known_hosts_are_per_vm_and_forgotten() {
        let home = tempfile::tempdir().unwrap();
        let ssh = SshHome::in_config_dir(home.path());
        ssh.prepare_known_hosts().unwrap();
        let file = ssh.known_hosts("g1");
        std::fs::write(&file, "g1 ssh-ed25519 AAAA\n").unwrap();
        ssh.forget_host("g1").unwrap();
        assert!(!file.exists());
        ssh.forget_host("g1").unwrap();
    }
}
