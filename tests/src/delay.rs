//! A UDP delay line for the network benchmarks: a loopback proxy in front of
//! a QUIC listener that holds every datagram for a fixed one-way delay in
//! each direction, and counts the datagrams and bytes that cross it.
//!
//! Each client address gets its own upstream socket, so the listener sees
//! one peer per client, as it would without the proxy. Datagrams keep their
//! order (the delay is the same for all); the proxy loses, duplicates and
//! rate-limits nothing itself. The clients' datagrams are read on a thread
//! of the proxy's own, the target's replies on the tokio runtime, and both
//! are sent on another thread, which sleeps with the OS timer (a tokio
//! timer would round every delay up to the next millisecond):
//! [`LinkBytes::mean_delay`] reports the delay actually applied. Its
//! sockets ask for large receive buffers, so that it does not drop what
//! arrives while it waits for a core; [`udp_socket_drops`] says whether a
//! socket dropped anything all the same.
//!
//! ```no_run
//! # async fn f(target: std::net::SocketAddr) -> std::io::Result<()> {
//! use fieldsync_tests::delay::DelayProxy;
//! let wan = DelayProxy::start(target, std::time::Duration::from_millis(50)).await?;
//! // connect to wan.addr() instead of target …
//! let crossed = wan.bytes();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// The receive buffer the proxy asks for on each of its sockets (the OS
/// caps it, on Linux at `net.core.rmem_max`): the default (about 200 KiB
/// on Linux) overflows when many clients send at once and the reader
/// thread waits for a core.
const RECV_BUFFER: usize = 8 << 20;

/// How often the reader thread looks whether its proxy was dropped.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How long the sender retries a datagram the kernel has no room for
/// before dropping it, as a full link would.
const SEND_PATIENCE: Duration = Duration::from_millis(20);

/// Datagrams and bytes that crossed a [`DelayProxy`] so far, each way: `up`
/// is client → target, `down` target → client. Bytes are UDP payloads (the
/// whole QUIC packets; IP and UDP headers, 28 bytes a datagram over IPv4,
/// are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkBytes {
    /// Bytes client → target.
    pub up: u64,
    /// Bytes target → client.
    pub down: u64,
    /// Datagrams client → target.
    pub up_datagrams: u64,
    /// Datagrams target → client.
    pub down_datagrams: u64,
    /// Datagrams forwarded (both ways; the others are still on their way).
    pub forwarded: u64,
    /// Sum of the delays of the forwarded datagrams, in microseconds.
    pub delay_us: u64,
}

impl LinkBytes {
    /// Bytes both ways.
    pub fn total(&self) -> u64 {
        self.up + self.down
    }

    /// Datagrams both ways.
    pub fn datagrams(&self) -> u64 {
        self.up_datagrams + self.down_datagrams
    }

    /// What crossed between `earlier` and `self`.
    pub fn since(&self, earlier: &LinkBytes) -> LinkBytes {
        LinkBytes {
            up: self.up.saturating_sub(earlier.up),
            down: self.down.saturating_sub(earlier.down),
            up_datagrams: self.up_datagrams.saturating_sub(earlier.up_datagrams),
            down_datagrams: self.down_datagrams.saturating_sub(earlier.down_datagrams),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            delay_us: self.delay_us.saturating_sub(earlier.delay_us),
        }
    }

    /// The mean one-way delay actually applied to a datagram (zero when
    /// none was forwarded).
    pub fn mean_delay(&self) -> Duration {
        match self.forwarded {
            0 => Duration::ZERO,
            n => Duration::from_micros(self.delay_us / n),
        }
    }
}

/// The proxy's counters, shared by its tasks and its sender thread.
#[derive(Debug, Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    up_datagrams: AtomicU64,
    down_datagrams: AtomicU64,
    forwarded: AtomicU64,
    delay_us: AtomicU64,
}

impl Counters {
    fn count(&self, up: bool, bytes: usize) {
        let (b, d) = if up {
            (&self.up, &self.up_datagrams)
        } else {
            (&self.down, &self.down_datagrams)
        };
        b.fetch_add(bytes as u64, Ordering::Relaxed);
        d.fetch_add(1, Ordering::Relaxed);
    }

    fn forwarded(&self, arrived: Instant) {
        let us = u64::try_from(arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.delay_us.fetch_add(us, Ordering::Relaxed);
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LinkBytes {
        LinkBytes {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
            up_datagrams: self.up_datagrams.load(Ordering::Relaxed),
            down_datagrams: self.down_datagrams.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            delay_us: self.delay_us.load(Ordering::Relaxed),
        }
    }
}

/// A datagram on its way.
struct InFlight {
    arrived: Instant,
    /// The socket to send it from (a clone of the one it is read from).
    from: Arc<std::net::UdpSocket>,
    /// Where to; `None` for a connected socket.
    to: Option<SocketAddr>,
    datagram: Vec<u8>,
}

/// A loopback UDP proxy to one target with a fixed one-way delay each way.
/// Its threads and tasks stop when it is dropped.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    delay: Duration,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// Binds a UDP socket on loopback that forwards to `target`, each
    /// datagram `one_way` later, and the replies back as late. Call inside
    /// a tokio runtime (it reads the replies).
    pub async fn start(target: SocketAddr, one_way: Duration) -> std::io::Result<Self> {
        let front = std::net::UdpSocket::bind(loopback(target))?;
        roomy(&front);
        // Blocking, woken now and then to see whether the proxy is gone.
        front.set_read_timeout(Some(STOP_CHECK))?;
        let addr = front.local_addr()?;
        let front_send = Arc::new(front.try_clone()?);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std_mpsc::channel::<InFlight>();
        let sender_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("delay-proxy-send".into())
            .spawn(move || send_loop(rx, one_way, &sender_counters))?;
        let reader = Reader {
            front,
            front_send,
            target,
            tx,
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            runtime: tokio::runtime::Handle::current(),
        };
        std::thread::Builder::new()
            .name("delay-proxy-read".into())
            .spawn(move || reader.run())?;
        Ok(Self {
            addr,
            delay: one_way,
            counters,
            stop,
        })
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one-way delay asked for.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// What crossed so far.
    pub fn bytes(&self) -> LinkBytes {
        self.counters.snapshot()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // The reader thread sees this within STOP_CHECK and ends, with it
        // the per-client tasks (its JoinSet) and then the sender thread
        // (every sender of its channel gone).
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A loopback address of `target`'s family, any port.
fn loopback(target: SocketAddr) -> SocketAddr {
    let ip = match target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, 0)
}

/// Asks for a large receive buffer on `socket`; best effort (a smaller
/// one only makes drops under load likelier, and those are counted).
fn roomy(socket: &std::net::UdpSocket) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(RECV_BUFFER);
}

/// The sender thread: forwards each datagram once its delay is over, in
/// the order they arrived.
fn send_loop(rx: std_mpsc::Receiver<InFlight>, delay: Duration, counters: &Counters) {
    while let Ok(d) = rx.recv() {
        let due = d.arrived + delay;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        counters.forwarded(d.arrived);
        let give_up = Instant::now() + SEND_PATIENCE;
        loop {
            let sent = match d.to {
                Some(to) => d.from.send_to(&d.datagram, to),
                None => d.from.send(&d.datagram),
            };
            match sent {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_micros(20));
                }
                // Sent, or lost as on a real link (QUIC recovers).
                _ => break,
            }
        }
    }
}

/// The reader thread's state: it reads the clients' datagrams on `front`
/// (on a thread of its own, so that a busy runtime does not leave them
/// to overflow the socket's buffer) and gives each client an upstream
/// socket, whose replies a task on `runtime` reads.
struct Reader {
    front: std::net::UdpSocket,
    front_send: Arc<std::net::UdpSocket>,
    target: SocketAddr,
    tx: std_mpsc::Sender<InFlight>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
}

impl Reader {
    fn run(self) {
        let mut tasks = JoinSet::new();
        let mut clients: HashMap<SocketAddr, Arc<std::net::UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            let (n, client) = match self.front.recv_from(&mut buf) {
                Ok(got) => got,
                // A timeout (time to look at `stop`), or an ICMP error
                // about an earlier datagram: neither is fatal.
                Err(_) => continue,
            };
            let arrived = Instant::now();
            self.counters.count(true, n);
            let upstream = match clients.get(&client) {
                Some(u) => Arc::clone(u),
                None => match self.open_upstream(&mut tasks, client) {
                    Ok(send) => {
                        clients.insert(client, Arc::clone(&send));
                        send
                    }
                    Err(_) => continue, // dropped, as on a link with no route
                },
            };
            let d = InFlight {
                arrived,
                from: upstream,
                to: None,
                datagram: buf[..n].to_vec(),
            };
            if self.tx.send(d).is_err() {
                return; // the sender thread is gone
            }
        }
    }

    /// `client`'s upstream socket, connected to the target: a task reads
    /// it; the returned handle is the sender thread's.
    fn open_upstream(
        &self,
        tasks: &mut JoinSet<()>,
        client: SocketAddr,
    ) -> std::io::Result<Arc<std::net::UdpSocket>> {
        let socket = std::net::UdpSocket::bind(loopback(self.target))?;
        roomy(&socket);
        socket.connect(self.target)?;
        socket.set_nonblocking(true)?;
        let send = Arc::new(socket.try_clone()?);
        let read = {
            let _entered = self.runtime.enter();
            UdpSocket::from_std(socket)?
        };
        tasks.spawn_on(
            read_upstream(
                read,
                Arc::clone(&self.front_send),
                client,
                self.tx.clone(),
                Arc::clone(&self.counters),
            ),
            &self.runtime,
        );
        Ok(send)
    }
}

/// Reads what the target sends `client` and queues it back through `front`.
async fn read_upstream(
    upstream: UdpSocket,
    front: Arc<std::net::UdpSocket>,
    client: SocketAddr,
    tx: std_mpsc::Sender<InFlight>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => {
                counters.count(false, n);
                let d = InFlight {
                    arrived: Instant::now(),
                    from: Arc::clone(&front),
                    to: Some(client),
                    datagram: buf[..n].to_vec(),
                };
                if tx.send(d).is_err() {
                    return;
                }
            }
            // ICMP "port unreachable" after the target went away: keep
            // listening, the target may come back on the same port.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// Datagrams dropped so far by the open UDP sockets bound to local `port`
/// (the `drops` column of `/proc/net/udp` and `/proc/net/udp6`); `None`
/// where those files are not available.
pub fn udp_socket_drops(port: u16) -> Option<u64> {
    let mut found = None;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Some(drops) = fields.last().and_then(|d| d.parse::<u64>().ok())
            {
                *found.get_or_insert(0) += drops;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_after_the_delay_and_counts() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy = DelayProxy::start(target.local_addr().unwrap(), Duration::from_millis(20))
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = Instant::now();
        client.send_to(b"ping", proxy.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = target.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert!(sent.elapsed() >= Duration::from_millis(20));
        target.send_to(b"pong!", from).await.unwrap();
        let (n, back) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], back), (&b"pong!"[..], proxy.addr()));
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(40), "{took:?}");
        let b = proxy.bytes();
        assert_eq!((b.up, b.down, b.datagrams(), b.forwarded), (4, 5, 2, 2));
        let applied = b.mean_delay();
        assert!(
            applied >= Duration::from_millis(20) && applied < Duration::from_millis(30),
            "{applied:?}"
        );
        assert_eq!(
            udp_socket_drops(proxy.addr().port()).unwrap_or(0),
            0,
            "nothing dropped"
        );
    }
}
