//! The control socket: how the command line reaches a running server.
//!
//! While `serve` runs, the server process holds the store (redb admits one
//! process per file), so administrative commands travel to it over a Unix
//! domain socket, `DIR/control.sock`, and run there in-process.
//!
//! Protocol: one request per connection. The client sends one line, the
//! JSON of an [`AdminRequest`] and `\n` (at most [`MAX_REQUEST_LEN`]
//! bytes); the server answers one line, `{"reply":"done","output":...}` or
//! `{"reply":"failed","error":...}` and `\n` (at most [`MAX_REPLY_LEN`]
//! bytes), and closes. The socket file has mode 0600 inside the 0700 data
//! directory, and the server also refuses a peer whose user id is not the
//! socket owner's. Requests run one at a time.
//!
//! ```no_run
//! # async fn f() -> Result<(), fieldsync_server::control::ControlError> {
//! use fieldsync_server::admin::{AdminRequest, AdminResponse};
//! use fieldsync_server::control::{ControlServer, request};
//! let path = std::path::Path::new("/tmp/fs/control.sock");
//! let server = ControlServer::bind(path)?;
//! tokio::spawn(server.serve(|req: AdminRequest| {
//!     Ok(AdminResponse { output: format!("{req:?}\n") })
//! }));
//! let reply = tokio::task::spawn_blocking(move || request(path, &AdminRequest::Cases { json: false }));
//! # Ok(()) }
//! ```

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use crate::admin::{AdminRequest, AdminResponse};

/// Largest request line, in bytes (the newline included).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// Largest reply line, in bytes (a large case's history can be long).
pub const MAX_REPLY_LEN: usize = 64 * 1024 * 1024;
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to send a reply, and a client to wait for one.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Serving or using the control socket failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The socket could not be created.
    #[error("cannot listen on the control socket {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A server answers on the socket already.
    #[error("another server already answers on the control socket {}", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket sits where the socket goes.
    #[error("{} exists and is not a socket; move it away", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// No server answers on the socket.
    #[error("no server answers on the control socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Sending the request or reading the reply failed.
    #[error("control socket {}: cannot {op}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request is larger than [`MAX_REQUEST_LEN`].
    #[error("the request is too large ({len} bytes; the limit is {MAX_REQUEST_LEN})")]
    RequestTooLarge {
        /// Its size.
        len: usize,
    },
    /// The reply is larger than [`MAX_REPLY_LEN`].
    #[error("the server's reply is larger than {MAX_REPLY_LEN} bytes")]
    ReplyTooLarge,
    /// The reply could not be decoded.
    #[error("malformed reply from the server: {detail}")]
    MalformedReply {
        /// What is wrong with it.
        detail: String,
    },
    /// The server ran the command, and it failed: the server's message.
    #[error("{message}")]
    Failed {
        /// The error, as the server words it.
        message: String,
    },
}

/// One reply line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
enum Reply {
    Done { output: String },
    Failed { error: String },
}

impl From<Result<AdminResponse, String>> for Reply {
    fn from(r: Result<AdminResponse, String>) -> Self {
        match r {
            Ok(resp) => Reply::Done {
                output: resp.output,
            },
            Err(error) => Reply::Failed { error },
        }
    }
}

/// The socket file of a listening server: removed when the server stops,
/// unless another server has replaced it since.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    inode: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A bound control socket, ready to [serve](ControlServer::serve).
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    file: SocketFile,
    owner: u32,
}

impl ControlServer {
    /// Creates the socket at `path` (mode 0600). A stale socket left by a
    /// server that is gone is replaced; a live one is [`ControlError::InUse`].
    /// Must be called inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let bind_err = |source| ControlError::Bind {
            path: path.to_owned(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket {
                    path: path.to_owned(),
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_owned(),
                });
            }
            tracing::info!(path = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
        Ok(Self {
            listener,
            file: SocketFile {
                path: path.to_owned(),
                inode: meta.ino(),
            },
            owner: meta.uid(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Answers requests with `handler` (one at a time, each on a blocking
    /// thread) until this future is dropped, which removes the socket file.
    /// `Err` from the handler is the command's error message.
    pub async fn serve<H>(self, handler: H)
    where
        H: Fn(AdminRequest) -> Result<AdminResponse, String> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let one_at_a_time = Arc::new(Mutex::new(()));
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let lock = one_at_a_time.clone();
            let owner = self.owner;
            tokio::spawn(async move {
                if let Err(e) = connection(stream, owner, handler, lock).await {
                    tracing::debug!(error = %e, "control connection ended early");
                }
                drop(slot);
            });
        }
    }
}

/// Binds the control socket at `path` and serves it with `handler` until
/// the future is dropped (see [`ControlServer`]).
pub async fn serve_control<H>(path: &Path, handler: H) -> Result<(), ControlError>
where
    H: Fn(AdminRequest) -> Result<AdminResponse, String> + Send + Sync + 'static,
{
    ControlServer::bind(path)?.serve(handler).await;
    Ok(())
}

/// Serves one connection: reads the request, runs it, writes the reply.
async fn connection<H>(
    mut stream: UnixStream,
    owner: u32,
    handler: Arc<H>,
    lock: Arc<Mutex<()>>,
) -> std::io::Result<()>
where
    H: Fn(AdminRequest) -> Result<AdminResponse, String> + Send + Sync + 'static,
{
    let uid = stream.peer_cred()?.uid();
    if uid != owner {
        tracing::warn!(uid, owner, "control socket: refused a peer of another user");
        return Ok(());
    }
    let mut line = Vec::new();
    let read = {
        let mut reader = tokio::io::BufReader::new((&mut stream).take(MAX_REQUEST_LEN as u64 + 1));
        tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    };
    let reply = match read {
        Err(_) => Reply::Failed {
            error: "the request did not arrive in time".into(),
        },
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_LEN => {
            // Read a little of the rest (bounded), so that closing with
            // unread bytes does not reset the connection before the client
            // reads why it was refused.
            let mut rest = (&mut stream).take(MAX_REQUEST_LEN as u64);
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::copy(&mut rest, &mut tokio::io::sink()),
            )
            .await;
            Reply::Failed {
                error: format!("the request is larger than {MAX_REQUEST_LEN} bytes"),
            }
        }
        Ok(Ok(_)) => match serde_json::from_slice::<AdminRequest>(&line) {
            Err(e) => Reply::Failed {
                error: format!("malformed request: {e}"),
            },
            Ok(req) => {
                let run = tokio::task::spawn_blocking(move || {
                    let _one = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    handler(req)
                });
                match run.await {
                    Ok(result) => result.into(),
                    Err(e) => Reply::Failed {
                        error: format!("internal error (please report): {e}"),
                    },
                }
            }
        },
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_else(|e| {
        format!(r#"{{"reply":"failed","error":"cannot encode the reply: {e}"}}"#).into_bytes()
    });
    if bytes.len() >= MAX_REPLY_LEN {
        bytes = serde_json::to_vec(&Reply::Failed {
            error: format!("the reply is larger than {MAX_REPLY_LEN} bytes"),
        })
        .unwrap_or_default();
    }
    bytes.push(b'\n');
    tokio::time::timeout(REPLY_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Sends `req` to the server listening at `path` and waits for its reply
/// (blocking). A command that failed in the server is [`ControlError::Failed`].
pub fn request(path: &Path, req: &AdminRequest) -> Result<AdminResponse, ControlError> {
    let io = |op| {
        let path = path.to_owned();
        move |source| ControlError::Io { path, op, source }
    };
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::MalformedReply {
        detail: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    if line.len() > MAX_REQUEST_LEN {
        return Err(ControlError::RequestTooLarge { len: line.len() });
    }
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(REPLY_TIMEOUT)))
        .map_err(io("configure"))?;
    stream.write_all(&line).map_err(io("send the request"))?;
    let mut reply = Vec::new();
    BufReader::new((&stream).take(MAX_REPLY_LEN as u64 + 1))
        .read_until(b'\n', &mut reply)
        .map_err(io("read the reply"))?;
    if reply.len() > MAX_REPLY_LEN {
        return Err(ControlError::ReplyTooLarge);
    }
    if reply.is_empty() {
        return Err(ControlError::MalformedReply {
            detail: "the server closed the connection without a reply (was it refused?)".into(),
        });
    }
    match serde_json::from_slice::<Reply>(&reply) {
        Ok(Reply::Done { output }) => Ok(AdminResponse { output }),
        Ok(Reply::Failed { error }) => Err(ControlError::Failed { message: error }),
        Err(e) => Err(ControlError::MalformedReply {
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn echo(req: AdminRequest) -> Result<AdminResponse, String> {
        match req {
            AdminRequest::Cases { json: true } => Err("cases refused".into()),
            other => Ok(AdminResponse {
                output: format!("{other:?}\n"),
            }),
        }
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_replies_limits_and_the_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            ControlServer::bind(&path),
            Err(ControlError::Bind { .. } | ControlError::InUse { .. })
        ));
        let task = tokio::spawn(server.serve(echo));
        assert!(matches!(
            ControlServer::bind(&path),
            Err(ControlError::InUse { .. })
        ));

        let p = path.clone();
        let ok = blocking(move || request(&p, &AdminRequest::Devices { json: false })).await;
        assert_eq!(ok.unwrap().output, "Devices { json: false }\n");
        let p = path.clone();
        let failed = blocking(move || request(&p, &AdminRequest::Cases { json: true })).await;
        let err = failed.unwrap_err();
        assert!(matches!(&err, ControlError::Failed { .. }), "{err:?}");
        assert_eq!(err.to_string(), "cases refused");

        // Raw clients: garbage and an oversized line get named refusals.
        let raw = |bytes: Vec<u8>| {
            let p = path.clone();
            move || {
                let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
                let _ = s.write_all(&bytes);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            }
        };
        let out = blocking(raw(b"{not json}\n".to_vec())).await;
        assert!(out.contains("malformed request"), "{out}");
        let out = blocking(raw(vec![b'x'; MAX_REQUEST_LEN + 10])).await;
        assert!(out.contains("larger than"), "{out}");

        task.abort();
        let _ = task.await;
        assert!(!path.exists(), "the socket file outlived its server");
        let p = path.clone();
        let gone = blocking(move || request(&p, &AdminRequest::Devices { json: false })).await;
        assert!(matches!(gone, Err(ControlError::Connect { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_socket_is_replaced_and_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // A socket whose server is gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = ControlServer::bind(&path).unwrap();
        let task = tokio::spawn(server.serve(echo));
        let p = path.clone();
        let ok = blocking(move || request(&p, &AdminRequest::Quarantine { json: false })).await;
        assert!(ok.is_ok());
        task.abort();
        let other = dir.path().join("plain");
        std::fs::write(&other, "x").unwrap();
        assert!(matches!(
            ControlServer::bind(&other),
            Err(ControlError::NotASocket { .. })
        ));
    }
}
