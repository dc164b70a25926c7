//! A fault-injecting TCP proxy for loopback tests.
//!
//! [`Proxy`] listens on an ephemeral 127.0.0.1 port and forwards every connection it accepts
//! to its upstream address, byte for byte, until told otherwise:
//!
//! - [`Proxy::cut`] closes every open connection on both sides, as a crashed peer or a reset
//!   network would;
//! - [`Proxy::black_hole`] stops forwarding on every open connection without closing it, as a
//!   dead route or a frozen peer would: nothing more arrives and nothing ends;
//! - [`Proxy::half_close`] ends the server-to-client direction of every open connection (the
//!   client reads end of stream) while bytes from the client still reach the server;
//! - [`Proxy::set_delay`] holds back every chunk of bytes, in both directions, before writing
//!   it on;
//! - [`Proxy::set_upstream`] sends later connections to another address.
//!
//! Faults apply to the connections open when they are given; connections accepted afterwards
//! pass normally, so a client that reconnects gets through. Dropping the proxy stops it and
//! closes its connections.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// What a connection is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forward both ways.
    None,
    /// Stop forwarding, keep both sockets open.
    BlackHole,
    /// End the direction towards the client, keep forwarding towards the server.
    HalfClose,
    /// Close both sockets.
    Cut,
}

/// What the accept loop and the connections share.
#[derive(Debug)]
struct Settings {
    upstream: Mutex<SocketAddr>,
    delay: Mutex<Duration>,
    accepted: AtomicUsize,
}

/// A TCP proxy on 127.0.0.1 between a client and a server, faulting on command.
///
/// See the module documentation for the faults. Every method acts at once; use
/// [`Proxy::accepted`] and [`Proxy::open`] to wait for the client's reaction.
#[derive(Debug)]
pub(crate) struct Proxy {
    address: SocketAddr,
    settings: Arc<Settings>,
    /// One sender per connection accepted; dropping them (with the proxy) cuts every connection.
    connections: Arc<Mutex<Vec<watch::Sender<Fault>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on an ephemeral loopback port.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let settings = Arc::new(Settings {
            upstream: Mutex::new(upstream),
            delay: Mutex::new(Duration::ZERO),
            accepted: AtomicUsize::new(0),
        });
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&settings),
            Arc::clone(&connections),
        ));
        Self {
            address,
            settings,
            connections,
            accept,
        }
    }

    /// The address clients connect to.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// The proxy's address as an `http://` URI, for a gRPC client.
    pub(crate) fn uri(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends connections accepted from now on to `upstream`.
    pub(crate) fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.settings.upstream) = upstream;
    }

    /// Delays every chunk of bytes by `delay` before forwarding it, on every connection;
    /// `Duration::ZERO` forwards at once again.
    pub(crate) fn set_delay(&self, delay: Duration) {
        *lock(&self.settings.delay) = delay;
    }

    /// Closes every open connection, towards the client and towards the server.
    pub(crate) fn cut(&self) {
        self.fault(Fault::Cut);
    }

    /// Stops forwarding on every open connection and leaves it open.
    pub(crate) fn black_hole(&self) {
        self.fault(Fault::BlackHole);
    }

    /// Ends the server-to-client direction of every open connection.
    pub(crate) fn half_close(&self) {
        self.fault(Fault::HalfClose);
    }

    /// How many connections the proxy has accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.settings.accepted.load(SeqCst)
    }

    /// How many accepted connections are still open on the client's side.
    pub(crate) fn open(&self) -> usize {
        let mut connections = lock(&self.connections);
        connections.retain(|connection| !connection.is_closed());
        connections.len()
    }

    fn fault(&self, fault: Fault) {
        let mut connections = lock(&self.connections);
        connections.retain(|connection| !connection.is_closed());
        for connection in connections.iter() {
            // A cut connection stays cut; any other fault replaces the one before.
            connection.send_if_modified(|current| {
                let changed = *current != Fault::Cut && *current != fault;
                if changed {
                    *current = fault;
                }
                changed
            });
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // The connection tasks see their senders gone and close their sockets.
        lock(&self.connections).clear();
    }
}

/// The proxy's locks guard plain values, consistent even after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<Settings>,
    connections: Arc<Mutex<Vec<watch::Sender<Fault>>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        settings.accepted.fetch_add(1, SeqCst);
        let (sender, control) = watch::channel(Fault::None);
        lock(&connections).push(sender);
        tokio::spawn(relay(client, Arc::clone(&settings), control));
    }
}

/// Forwards one connection until both directions ended, one failed, or it is cut.
async fn relay(client: TcpStream, settings: Arc<Settings>, mut control: watch::Receiver<Fault>) {
    let upstream = *lock(&settings.upstream);
    // A refused upstream closes the client's connection, as the server's refusal would have.
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();

    // The forwarding futures borrow the halves; they are dropped at the end of this block, so
    // that a fault can then act on the sockets themselves.
    let fault = {
        let up = forward(&mut client_read, &mut server_write, &settings);
        let down = forward(&mut server_read, &mut client_write, &settings);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                ended = &mut up, if !up_done => {
                    if ended.is_err() {
                        return;
                    }
                    up_done = true;
                }
                ended = &mut down, if !down_done => {
                    if ended.is_err() {
                        return;
                    }
                    down_done = true;
                }
                changed = control.changed() => match changed {
                    Ok(()) => break *control.borrow_and_update(),
                    Err(_) => return,
                },
            }
            if up_done && down_done {
                return;
            }
        }
    };

    match fault {
        Fault::None | Fault::Cut => {}
        Fault::BlackHole => {
            // Holding the sockets open is the whole point: neither peer learns anything.
            let _ = control.wait_for(|fault| *fault == Fault::Cut).await;
        }
        Fault::HalfClose => {
            let _ = client_write.shutdown().await;
            tokio::select! {
                _ = forward(&mut client_read, &mut server_write, &settings) => {}
                _ = control.wait_for(|fault| *fault == Fault::Cut) => {}
            }
        }
    }
}

/// Copies `from` to `to`, applying the current delay to every chunk, and passes the end of
/// stream on.
async fn forward(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    settings: &Settings,
) -> io::Result<()> {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        let delay = *lock(&settings.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        to.write_all(&buffer[..read]).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An upstream that echoes what it reads and counts the bytes it received.
    async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut buffer = [0; 1024];
                    while let Ok(read @ 1..) = socket.read(&mut buffer).await {
                        counted.fetch_add(read, SeqCst);
                        // The echo may fail once the proxy stopped reading; counting is what
                        // these tests look at then.
                        let _ = socket.write_all(&buffer[..read]).await;
                    }
                });
            }
        });
        (address, received)
    }

    /// Writes `bytes` and reads the same number back.
    async fn round_trip(socket: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        socket.write_all(bytes).await.unwrap();
        let mut echoed = vec![0; bytes.len()];
        socket.read_exact(&mut echoed).await.unwrap();
        echoed
    }

    /// Waits until `condition` holds, for at most 5 seconds.
    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    const QUIET: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn passes_bytes_both_ways() {
        let (upstream, _) = echo_server().await;
        let proxy = Proxy::start(upstream).await;
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut socket, b"hello").await, b"hello");
        assert_eq!((proxy.accepted(), proxy.open()), (1, 1));
    }

    #[tokio::test]
    async fn cut_closes_open_connections_and_lets_new_ones_through() {
        let (upstream, _) = echo_server().await;
        let proxy = Proxy::start(upstream).await;
        let mut first = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut first, b"a").await;

        proxy.cut();
        let mut buffer = [0; 1];
        let read = tokio::time::timeout(QUIET * 10, first.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the cut connection ends: {read:?}"
        );
        until("the cut connection is gone", || proxy.open() == 0).await;

        let mut second = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut second, b"b").await, b"b");
    }

    #[tokio::test]
    async fn black_hole_forwards_nothing_and_closes_nothing() {
        let (upstream, received) = echo_server().await;
        let proxy = Proxy::start(upstream).await;
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut socket, b"a").await;

        proxy.black_hole();
        socket.write_all(b"lost").await.unwrap();
        let mut buffer = [0; 4];
        let read = tokio::time::timeout(QUIET, socket.read(&mut buffer)).await;
        assert!(read.is_err(), "neither an answer nor an end: {read:?}");
        assert_eq!(received.load(SeqCst), 1, "nothing more reached the server");
        assert_eq!(proxy.open(), 1, "still open");

        let mut other = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut other, b"b").await, b"b");

        proxy.cut();
        let read = tokio::time::timeout(QUIET * 10, socket.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a cut ends it: {read:?}"
        );
    }

    #[tokio::test]
    async fn half_close_ends_the_way_back_only() {
        let (upstream, received) = echo_server().await;
        let proxy = Proxy::start(upstream).await;
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut socket, b"a").await;

        proxy.half_close();
        let mut buffer = [0; 1];
        let read = tokio::time::timeout(QUIET * 10, socket.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the client reads the end: {read:?}"
        );
        socket.write_all(b"still").await.unwrap();
        until("the server receives what the client wrote", || {
            received.load(SeqCst) == 6
        })
        .await;
    }

    #[tokio::test]
    async fn delay_holds_each_chunk_back() {
        let (upstream, _) = echo_server().await;
        let proxy = Proxy::start(upstream).await;
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();

        let delay = Duration::from_millis(100);
        proxy.set_delay(delay);
        let started = Instant::now();
        assert_eq!(round_trip(&mut socket, b"slow").await, b"slow");
        assert!(
            started.elapsed() >= 2 * delay,
            "delayed out and back: {:?}",
            started.elapsed()
        );

        proxy.set_delay(Duration::ZERO);
        let started = Instant::now();
        round_trip(&mut socket, b"fast").await;
        assert!(started.elapsed() < delay, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn new_connections_follow_the_upstream() {
        let (first, first_received) = echo_server().await;
        let (second, second_received) = echo_server().await;
        let proxy = Proxy::start(first).await;
        let mut old = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut old, b"1").await;

        proxy.set_upstream(second);
        let mut new = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut new, b"22").await;
        round_trip(&mut old, b"1").await;
        assert_eq!(first_received.load(SeqCst), 2, "open connections stay");
        assert_eq!(
            second_received.load(SeqCst),
            2,
            "new ones go to the new upstream"
        );
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let (upstream, _) = echo_server().await;
        let proxy = Proxy::start(upstream).await;
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        round_trip(&mut socket, b"a").await;
        assert!(proxy.uri().starts_with("http://127.0.0.1:"));

        drop(proxy);
        let mut buffer = [0; 1];
        let read = tokio::time::timeout(QUIET * 10, socket.read(&mut buffer)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    }
}
