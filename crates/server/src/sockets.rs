//! Listening sockets bound before the process gives up root: ports below 1024 need root
//! or `CAP_NET_BIND_SERVICE`, so `poplar serve` binds them first, drops to the
//! `[process]` user, and only then starts the runtime and the server on them.

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::listener::ListenerKind;

/// Every configured listening socket, bound and not yet served.
pub struct Sockets(Vec<(ListenerKind, std::net::TcpListener)>);

impl Sockets {
    /// Binds every configured socket. Needs no runtime, so it runs before any thread
    /// exists. std sets SO_REUSEADDR and the same backlog (128) as tokio's own `bind`.
    pub fn bind(config: &Config) -> anyhow::Result<Self> {
        let pop3 = config.listen.pop3.iter().map(|a| (ListenerKind::Pop3, *a));
        let pop3s = config
            .listen
            .pop3s
            .iter()
            .map(|a| (ListenerKind::Pop3s, *a));
        let mut listeners = Vec::new();
        for (kind, addr) in pop3.chain(pop3s) {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024
                {
                    " (ports below 1024 need root, which then drops to [process] user, or CAP_NET_BIND_SERVICE)"
                } else {
                    ""
                };
                anyhow::Error::new(e).context(format!("binding {} on {addr}{hint}", kind.name()))
            })?;
            // tokio takes over only non-blocking sockets.
            listener
                .set_nonblocking(true)
                .context("making a listening socket non-blocking")?;
            listeners.push((kind, listener));
        }
        Ok(Self(listeners))
    }

    /// Hands the sockets to the runtime; call it inside one.
    pub(crate) fn into_tokio(self) -> anyhow::Result<Vec<(ListenerKind, TcpListener)>> {
        self.0
            .into_iter()
            .map(|(kind, l)| Ok((kind, TcpListener::from_std(l)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_without_a_runtime_and_serves_inside_one() {
        let config = Config {
            listen: crate::config::Listen {
                pop3: vec!["127.0.0.1:0".parse().unwrap()],
                pop3s: vec!["127.0.0.1:0".parse().unwrap()],
            },
            ..Config::default()
        };
        let sockets = Sockets::bind(&config).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let listeners = runtime.block_on(async { sockets.into_tokio().unwrap() });
        let kinds: Vec<_> = listeners.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [ListenerKind::Pop3, ListenerKind::Pop3s]);
    }

    #[test]
    fn a_taken_address_names_the_listener() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = Config {
            listen: crate::config::Listen {
                pop3: vec![],
                pop3s: vec![taken.local_addr().unwrap()],
            },
            ..Config::default()
        };
        let err = format!("{:#}", Sockets::bind(&config).err().unwrap());
        assert!(err.starts_with("binding pop3s on 127.0.0.1:"), "{err}");
    }
}
