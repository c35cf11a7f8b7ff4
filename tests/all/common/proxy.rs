//! A TCP proxy between a server and PostgreSQL that can black-hole the
//! traffic: `cut()` keeps every socket open and stops moving bytes (as a
//! partition does: nobody is told), `close_all()` closes them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Proxy {
    /// Where the proxy listens.
    pub port: u16,
    cut: watch::Sender<bool>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port, passing every connection on to
    /// `target`. Runs on the calling test's runtime.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (cut, _) = watch::channel(false);
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = {
            let (cut, connections) = (cut.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let cut = cut.subscribe();
                    let mut set = connections.lock().expect("connections");
                    set.spawn(pass_on(client, target, cut));
                }
            })
        };
        Proxy {
            port,
            cut,
            connections,
            accept,
        }
    }

    /// `url` (a `postgres://` URL) with its port replaced by the proxy's.
    pub fn url(&self, url: &str, target_port: u16) -> String {
        url.replace(&format!(":{target_port}/"), &format!(":{}/", self.port))
    }

    /// Stops moving bytes, both ways, on every connection, old and new;
    /// the sockets stay open.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Closes every connection (the cut stays as it is).
    pub fn close_all(&self) {
        self.connections.lock().expect("connections").abort_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_all();
    }
}

async fn pass_on(client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    // A connection made while cut is accepted and never answered.
    if cut.wait_for(|cut| !*cut).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = copy(client_read, server_write, cut.clone()) => {}
        () = copy(server_read, client_write, cut.clone()) => {}
    }
    // One side closed: hold the other open while cut, as the network would.
    let _ = cut.wait_for(|cut| !*cut).await;
}

/// Moves bytes from `from` to `to` until either closes; while cut, reads
/// and writes nothing (the bytes wait in the kernels' buffers, unsent).
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 64 << 10];
    loop {
        if cut.wait_for(|cut| !*cut).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Cut while waiting for bytes: stop reading at once.
            _ = cut.wait_for(|cut| *cut) => continue,
        };
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
