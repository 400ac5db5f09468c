//! The home directory: where one user's identity, store and running-node files live.
//!
//! ```text
//! HOME/identity.key   identity secrets and storage key, wrapped (0600)
//! HOME/store/         the sled store (every value encrypted)
//! HOME/node.lock      held (flock) by the process using the store; contains its pid
//! HOME/api.json       the running node's local API address
//! HOME/api.token      the local API bearer token (0600)
//! ```

use crate::NodeError;
use dingo_crypto::at_rest::{key_file_needs_passphrase, unwrap_key_file, wrap_key_file};
use dingo_crypto::{CryptoError, Identity};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Paths inside one home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

/// Who holds a home: a node (which serves the local API while it runs) or a one-off command
/// (which lets go within moments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A node: `dingo run`, or an in-process node.
    Node,
    /// A CLI command that opened the home because no node was running.
    Command,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Command => "command",
        }
    }
}

/// The exclusive hold on a home; released when dropped.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| NodeError::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| NodeError::io(path, e))
}

impl Home {
    /// A home at `dir` (not created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The key file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("identity.key")
    }
    /// The store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }
    /// The API address file.
    pub fn api_file(&self) -> PathBuf {
        self.dir.join("api.json")
    }
    /// The API token file.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("api.token")
    }
    fn lock_file(&self) -> PathBuf {
        self.dir.join("node.lock")
    }

    /// Whether an identity exists here.
    pub fn is_initialized(&self) -> bool {
        self.key_file().exists()
    }

    /// Takes the exclusive hold on this home for `role`, or says who has it (pid and role).
    pub fn lock(&self, role: Role) -> Result<HomeLock, NodeError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| NodeError::io(&self.dir, e))?;
        let path = self.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| NodeError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = write!(file, "{} {}", std::process::id(), role.as_str());
                let _ = file.sync_all();
                Ok(HomeLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let mut parts = holder.split_whitespace();
                let pid = parts.next().unwrap_or("").to_owned();
                // A holder caught between truncating the file and writing it is a node starting.
                let role = match parts.next() {
                    Some("command") => Role::Command,
                    _ => Role::Node,
                };
                Err(NodeError::HomeInUse { dir: self.dir.display().to_string(), pid, role })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(NodeError::io(&path, e)),
        }
    }

    /// Writes a new identity's key file; refuses to overwrite one.
    pub fn create_identity(&self, identity: &Identity, passphrase: Option<&[u8]>) -> Result<(), NodeError> {
        if self.is_initialized() {
            return Err(NodeError::AlreadyInitialized(self.dir.display().to_string()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| NodeError::io(&self.dir, e))?;
        write_private(&self.key_file(), &wrap_key_file(&identity.to_secret_bytes(), passphrase))?;
        // The key file's name (and a new home's own) must survive a power cut too.
        for dir in [Some(self.dir.as_path()), self.dir.parent()].into_iter().flatten() {
            if dir.as_os_str().is_empty() {
                continue;
            }
            dingo_store::sync_dir(dir).map_err(|e| NodeError::io(dir, e))?;
        }
        Ok(())
    }

    /// Reads and unwraps the identity.
    pub fn load_identity(&self, passphrase: Option<&[u8]>) -> Result<Identity, NodeError> {
        let path = self.key_file();
        if !path.exists() {
            return Err(NodeError::NotInitialized(self.dir.display().to_string()));
        }
        let data = std::fs::read(&path).map_err(|e| NodeError::io(&path, e))?;
        if key_file_needs_passphrase(&data)? && passphrase.is_none() {
            return Err(NodeError::PassphraseRequired);
        }
        let secret = unwrap_key_file(&data, passphrase).map_err(|e| match e {
            CryptoError::WrongPassphrase => NodeError::WrongPassphrase,
            other => NodeError::Crypto(other),
        })?;
        Ok(Identity::from_secret_bytes(&secret)?)
    }

    /// Writes a private (0600) file, replacing an old one.
    pub fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
        let _ = std::fs::remove_file(path);
        write_private(path, bytes)
    }
}
