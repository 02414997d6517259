//! The KMS v2 socket file. Bound under a temporary name, made mode 0600, then renamed over
//! the configured path, so the path never names a socket others could connect to. A stale
//! socket (nobody listening) is replaced; a live one (another keygate, another plugin) is
//! refused, as is anything at the path that is not a socket. At shutdown the file is removed
//! if it is still the one keygate bound.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest socket path Linux accepts (`sun_path` holds 108 bytes with the NUL).
pub const MAX_PATH_LEN: usize = 107;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0}: another process is listening on this socket; refusing to replace it")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("{0}: the path is longer than {MAX_PATH_LEN} bytes (with room for a temporary name)")]
    TooLong(PathBuf),
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_owned();
    move |source| SocketError::Io { path, what, source }
}

/// A bound socket, not yet registered with the runtime.
#[derive(Debug)]
pub struct BoundSocket {
    listener: std::os::unix::net::UnixListener,
    file: SocketFile,
}

/// The socket file keygate bound: removed on drop if it is still that file (not one a later
/// process put at the path).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the file keygate bound.
    identity: (u64, u64),
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BoundSocket {
    /// Binds `path` (see the module comment). Blocking; call before serving.
    pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
        let tmp = temporary_name(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(parent, "cannot create the socket's directory"))?;
        }
        check_existing(path)?;
        let _ = std::fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp)
            .map_err(io(&tmp, "cannot bind the socket"))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&tmp, "cannot set mode 0600"))
            .and_then(|()| {
                std::fs::rename(&tmp, path).map_err(io(path, "cannot move the socket in place"))
            });
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let meta = std::fs::symlink_metadata(path).map_err(io(path, "cannot stat the socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(io(path, "cannot make the socket non-blocking"))?;
        Ok(BoundSocket {
            listener,
            file: SocketFile {
                path: path.to_owned(),
                identity: (meta.dev(), meta.ino()),
            },
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The listener registered with the runtime (call inside one), and the file to drop once
    /// the listener has drained.
    pub fn into_tokio(self) -> Result<(tokio::net::UnixListener, SocketFile), SocketError> {
        let listener = tokio::net::UnixListener::from_std(self.listener)
            .map_err(io(&self.file.path, "cannot register the socket"))?;
        Ok((listener, self.file))
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `DIR/.NAME.PID.tmp`, within the length a socket path may have.
fn temporary_name(path: &Path) -> Result<PathBuf, SocketError> {
    let name = path
        .file_name()
        .ok_or_else(|| SocketError::NotASocket(path.to_owned()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    if tmp.as_os_str().len() > MAX_PATH_LEN {
        return Err(SocketError::TooLong(path.to_owned()));
    }
    Ok(tmp)
}

/// Nothing at `path`, or a stale socket: fine. A live socket or anything else: refused.
fn check_existing(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "cannot stat the path")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_owned())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket (nobody listens on it)");
            Ok(())
        }
        Err(e) => Err(io(path, "cannot tell whether the socket is in use")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0600_replaces_stale_refuses_live_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kms.sock");
        let first = BoundSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            BoundSocket::bind(&path).unwrap_err(),
            SocketError::InUse(_)
        ));
        // A socket left behind by a process that died: nobody listens.
        let BoundSocket { listener, file } = first;
        drop(listener);
        std::mem::forget(file);
        let second = BoundSocket::bind(&path).unwrap();
        drop(second);
        assert!(!path.exists(), "the socket is removed at shutdown");
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            BoundSocket::bind(&path).unwrap_err(),
            SocketError::NotASocket(_)
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
        let long = dir.path().join("x".repeat(120));
        assert!(matches!(
            BoundSocket::bind(&long).unwrap_err(),
            SocketError::TooLong(_)
        ));
    }
}
