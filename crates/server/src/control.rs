//! The local control socket (`<data_dir>/control.sock`, mode 0600 from its creation): `poplar sessions`
//! lists live sessions through it and can end one.
//!
//! One request line per connection, answered with JSON lines:
//! - `list` → one object per session: `session`, `user`, `src`, `listener`, `state`,
//!   `since` (RFC 3339);
//! - `end SESSION` → `{"ended":true}` or `{"ended":false,"error":"..."}`;
//! - `end-user USER` (canonical name) → `{"ended":N}`: every session of that user, as
//!   `user disable` and `user del` ask.
//!
//! Ending a session closes it the way a shutdown does: it is never in UPDATE while it
//! waits for input, so nothing is deleted, and its maildrop lock is released.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// One live session, as the control socket shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LiveSession {
    pub session: String,
    pub user: Option<String>,
    pub src: String,
    pub listener: &'static str,
    pub state: &'static str,
    pub since: String,
    #[serde(skip)]
    pub end: CancellationToken,
}

/// Every live session; entries leave when their connection ends.
#[derive(Default)]
pub(crate) struct Registry {
    live: Mutex<HashMap<String, LiveSession>>,
}

impl Registry {
    pub(crate) fn add(&self, s: LiveSession) {
        self.lock().insert(s.session.clone(), s);
    }

    pub(crate) fn update(&self, id: &str, user: Option<&str>, state: &'static str) {
        if let Some(s) = self.lock().get_mut(id) {
            if let Some(user) = user {
                s.user = Some(user.to_owned());
            }
            s.state = state;
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn list(&self) -> Vec<LiveSession> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.since.cmp(&b.since).then(a.session.cmp(&b.session)));
        all
    }

    fn end(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(s) => {
                s.end.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends every live session of `user`; how many.
    fn end_user(&self, user: &str) -> usize {
        let live = self.lock();
        let of_user = live.values().filter(|s| s.user.as_deref() == Some(user));
        of_user.map(|s| s.end.cancel()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveSession>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The socket's path for a data folder.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// How long a client of the control socket may take to send its request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the control socket until `shutdown`.
pub(crate) async fn serve(path: PathBuf, registry: Arc<Registry>, shutdown: CancellationToken) {
    serve_with(path, registry, shutdown, REQUEST_TIMEOUT).await;
}

/// Binds the socket at `path` with mode 0600 from the start: it is made inside a fresh
/// 0700 folder beside `path`, given its mode there and only then renamed into place,
/// so it is never reachable with a looser mode (a chmod after bind would leave a
/// moment when the umask's mode applied).
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let parent = path.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(".control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let made = staging.join("control.sock");
    let bound = UnixListener::bind(&made).and_then(|listener| {
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600))?;
        // A socket left by a previous run (or a crash) is replaced.
        std::fs::rename(&made, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

async fn serve_with(
    path: PathBuf,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    request_timeout: std::time::Duration,
) {
    let listener = match bind_private(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "control socket not available");
            return;
        }
    };
    // After an accept error (no descriptor free, say), wait before the next accept,
    // doubling up to a second: retrying at once would spin a core.
    let mut pause = std::time::Duration::ZERO;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    pause = std::time::Duration::ZERO;
                    stream
                }
                Err(e) => {
                    pause = (pause * 2).clamp(
                        std::time::Duration::from_millis(50),
                        std::time::Duration::from_secs(1),
                    );
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "control socket: accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut read = BufReader::new(read).take(1024);
            // A client that connects and says nothing is let go.
            match tokio::time::timeout(request_timeout, read.read_line(&mut line)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let answer = answer(&registry, line.trim());
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

fn answer(registry: &Registry, request: &str) -> String {
    let mut words = request.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("list"), None, _) => registry
            .list()
            .iter()
            .filter_map(|s| serde_json::to_string(s).ok())
            .map(|l| l + "\n")
            .collect(),
        (Some("end"), Some(id), None) => {
            if registry.end(id) {
                "{\"ended\":true}\n".into()
            } else {
                "{\"ended\":false,\"error\":\"no such session\"}\n".into()
            }
        }
        (Some("end-user"), Some(user), None) => {
            format!("{{\"ended\":{}}}\n", registry.end_user(user))
        }
        _ => "{\"error\":\"requests: list | end SESSION | end-user USER\"}\n".into(),
    }
}

/// The client address in one string.
pub(crate) fn src(peer: SocketAddr) -> String {
    SocketAddr::new(peer.ip().to_canonical(), peer.port()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = Registry::default();
        let end = CancellationToken::new();
        r.add(LiveSession {
            session: "s-1".into(),
            user: None,
            src: "127.0.0.1:4000".into(),
            listener: "pop3s",
            state: "authorization",
            since: "2026-01-01T00:00:00.000Z".into(),
            end: end.clone(),
        });
        r.update("s-1", Some("alice"), "transaction");
        let listed = answer(&r, "list");
        let v: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
        assert_eq!(v["user"], "alice");
        assert_eq!(v["state"], "transaction");
        assert!(v.get("end").is_none());
        assert_eq!(
            answer(&r, "end s-2"),
            "{\"ended\":false,\"error\":\"no such session\"}\n"
        );
        assert!(!end.is_cancelled());
        assert_eq!(answer(&r, "end s-1"), "{\"ended\":true}\n");
        assert!(end.is_cancelled());
        assert!(answer(&r, "drop table").contains("error"));
        let bob = CancellationToken::new();
        r.add(LiveSession {
            session: "s-3".into(),
            user: Some("bob".into()),
            src: "127.0.0.1:4001".into(),
            listener: "pop3",
            state: "transaction",
            since: "2026-01-01T00:00:01.000Z".into(),
            end: bob.clone(),
        });
        assert_eq!(answer(&r, "end-user carol"), "{\"ended\":0}\n");
        assert_eq!(answer(&r, "end-user bob"), "{\"ended\":1}\n");
        assert!(bob.is_cancelled());
        r.remove("s-3");
        r.remove("s-1");
        assert_eq!(answer(&r, "list"), "");
    }

    #[tokio::test]
    async fn the_socket_is_private_and_silent_clients_are_let_go() {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // A stale socket from a crash is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            path.clone(),
            Arc::new(Registry::default()),
            shutdown.clone(),
            std::time::Duration::from_millis(100),
        ));
        let mut stream = None;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Ok(s) = tokio::net::UnixStream::connect(&path).await {
                stream = Some(s);
                break;
            }
        }
        let mut stream = stream.expect("the control socket never came up");
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // No staging folder is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["control.sock"]);
        // Saying nothing: closed after the request timeout.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut buf),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
        shutdown.cancel();
        task.await.unwrap();
        assert!(!path.exists());
    }
}
