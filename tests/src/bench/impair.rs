//! Impaired UDP sockets: a link emulator under QUIC.
//!
//! An [`ImpairedSocket`] wraps an ordinary loopback UDP socket and hands
//! it to quinn ([`fieldsync_transport::Listener::with_socket`],
//! [`fieldsync_transport::Connector::with_socket`]). What it *sends* goes
//! through a [`Link`]: a bottleneck of [`Profile::rate_bps`] with a
//! bounded FIFO queue in front ([`Profile::queue_bytes`], tail-drop when
//! full), then random loss ([`Profile::loss`]), then a one-way delay of
//! half [`Profile::rtt`]. Each datagram is serialized at the link rate with
//! its IPv4 and UDP headers ([`HEADER_BYTES`]); a datagram lost in the air
//! has still used the link. What it receives is untouched: give both ends
//! of a connection an impaired socket and the pair is the whole round trip,
//! each side shaping its own direction.
//!
//! Fates are drawn from a small seeded generator ([`SplitMix`]), one draw
//! per datagram offered, so the same seed and the same datagrams give the
//! same drops. The socket announces one datagram per transmit (no GSO), so
//! every datagram is shaped and counted on its own; a batch that comes
//! anyway is split.
//!
//! Delivery happens on a tokio task that sleeps until each datagram's time
//! (tokio's timer: up to a millisecond late, never early, and lateness does
//! not add up since every time is absolute). [`ImpairedSocket::stats`]
//! counts what was offered, lost, dropped by the queue, and the deepest
//! the queue got.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use fieldsync_transport::socket::{
    AsyncUdpSocket, EcnCodepoint, RecvMeta, Transmit, UdpPoller, tokio_socket,
};
use tokio::sync::mpsc;

/// IPv4 and UDP headers: what a datagram costs on the link beyond its payload.
pub const HEADER_BYTES: usize = 28;

/// A link's character, the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// A short name for the report.
    pub name: &'static str,
    /// The round trip of an empty link: twice the one-way delay.
    pub rtt: Duration,
    /// The share of datagrams lost at random, 0..1.
    pub loss: f64,
    /// The bottleneck's rate, bits per second.
    pub rate_bps: u64,
    /// The bottleneck queue, in bytes on the wire (the datagram being
    /// serialized included); a datagram that does not fit is dropped.
    pub queue_bytes: usize,
}

impl Profile {
    /// A geostationary satellite terminal: 600 ms round trips, 1 % loss,
    /// 512 kbit/s, a queue of one second of traffic (64 KB).
    pub const SATELLITE: Profile = Profile {
        name: "satellite",
        rtt: Duration::from_millis(600),
        loss: 0.01,
        rate_bps: 512_000,
        queue_bytes: 64_000,
    };

    /// A bad cellular link: 300 ms round trips, 10 % loss, 128 kbit/s, a
    /// deep queue of two seconds of traffic (32 KB), as mobile networks keep.
    pub const BAD_CELLULAR: Profile = Profile {
        name: "bad cellular",
        rtt: Duration::from_millis(300),
        loss: 0.10,
        rate_bps: 128_000,
        queue_bytes: 32_000,
    };

    /// An HF radio modem: 1.5 s round trips, 20 % loss, 16 kbit/s, a queue
    /// of a dozen full datagrams (16 KB, eight seconds of traffic).
    pub const HF_RADIO: Profile = Profile {
        name: "HF/radio",
        rtt: Duration::from_millis(1500),
        loss: 0.20,
        rate_bps: 16_000,
        queue_bytes: 16_000,
    };

    /// The delay each datagram takes to cross, once serialized.
    pub fn one_way(&self) -> Duration {
        self.rtt / 2
    }

    /// How long the link takes to put `wire_bytes` on the wire.
    pub fn serialization(&self, wire_bytes: usize) -> Duration {
        let nanos = (wire_bytes as u128 * 8 * 1_000_000_000) / u128::from(self.rate_bps.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// SplitMix64: a small, fast, seeded generator (Steele, Lea and Flood),
/// good enough for drawing losses, and the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..1`, uniform.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the link did with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It arrives at the far end at this time.
    Deliver(Instant),
    /// The queue was full: dropped before the link.
    QueueFull,
    /// Lost in transit (after using the link).
    Lost,
}

/// What a link carried and dropped, payload bytes (headers not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered to the link.
    pub datagrams: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Datagrams lost at random.
    pub lost: u64,
    /// Datagrams dropped because the queue was full.
    pub queue_drops: u64,
    /// Payload bytes dropped, by loss or by the queue.
    pub dropped_bytes: u64,
    /// The deepest the queue got, bytes on the wire.
    pub peak_queue_bytes: u64,
    /// Datagrams the inner socket refused to send (should stay 0).
    pub send_errors: u64,
}

impl LinkStats {
    /// Datagrams that crossed.
    pub fn delivered(&self) -> u64 {
        self.datagrams - self.lost - self.queue_drops
    }

    /// Both directions together.
    pub fn plus(self, o: LinkStats) -> LinkStats {
        LinkStats {
            datagrams: self.datagrams + o.datagrams,
            bytes: self.bytes + o.bytes,
            lost: self.lost + o.lost,
            queue_drops: self.queue_drops + o.queue_drops,
            dropped_bytes: self.dropped_bytes + o.dropped_bytes,
            peak_queue_bytes: self.peak_queue_bytes.max(o.peak_queue_bytes),
            send_errors: self.send_errors + o.send_errors,
        }
    }
}

/// One direction of a link: the queue, the bottleneck, loss and delay.
/// Pure (time is passed in), so that it can be checked without sockets.
#[derive(Debug, Clone)]
pub struct Link {
    profile: Profile,
    rng: SplitMix,
    /// When the bottleneck finishes the last datagram it took.
    free_at: Option<Instant>,
    stats: LinkStats,
}

impl Link {
    /// An idle link.
    pub fn new(profile: Profile, seed: u64) -> Self {
        Link {
            profile,
            rng: SplitMix::new(seed),
            free_at: None,
            stats: LinkStats::default(),
        }
    }

    /// Offers a datagram of `payload` bytes at `now` (times must not go back).
    pub fn offer(&mut self, now: Instant, payload: usize) -> Fate {
        let p = self.profile;
        let roll = self.rng.next_f64();
        self.stats.datagrams += 1;
        self.stats.bytes += payload as u64;
        let wire = payload + HEADER_BYTES;
        let start = self.free_at.map_or(now, |f| f.max(now));
        let backlog = start - now;
        let queued = u64::try_from(backlog.as_nanos() * u128::from(p.rate_bps) / 8_000_000_000)
            .unwrap_or(u64::MAX);
        if queued + wire as u64 > p.queue_bytes as u64 {
            self.stats.queue_drops += 1;
            self.stats.dropped_bytes += payload as u64;
            return Fate::QueueFull;
        }
        self.stats.peak_queue_bytes = self.stats.peak_queue_bytes.max(queued + wire as u64);
        let done = start + p.serialization(wire);
        self.free_at = Some(done);
        if roll < p.loss {
            self.stats.lost += 1;
            self.stats.dropped_bytes += payload as u64;
            return Fate::Lost;
        }
        Fate::Deliver(done + p.one_way())
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

/// A datagram on its way.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
    contents: Vec<u8>,
}

/// A UDP socket whose sends cross an impaired [`Link`]; see the module.
#[derive(Debug)]
pub struct ImpairedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    link: Mutex<Link>,
    wire: mpsc::UnboundedSender<InFlight>,
    send_errors: Arc<std::sync::atomic::AtomicU64>,
}

impl ImpairedSocket {
    /// Binds a UDP socket on `addr` and impairs what it sends with
    /// `profile`, drawing fates from `seed`. Call within a tokio runtime.
    pub fn bind(addr: SocketAddr, profile: Profile, seed: u64) -> Result<Arc<Self>> {
        let std = std::net::UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        Ok(Self::wrap(tokio_socket(std)?, profile, seed))
    }

    /// Impairs what `inner` sends. Call within a tokio runtime.
    pub fn wrap(inner: Arc<dyn AsyncUdpSocket>, profile: Profile, seed: u64) -> Arc<Self> {
        let (wire, rx) = mpsc::unbounded_channel();
        let send_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(deliver(inner.clone(), rx, send_errors.clone()));
        Arc::new(ImpairedSocket {
            inner,
            link: Mutex::new(Link::new(profile, seed)),
            wire,
            send_errors,
        })
    }

    /// What this side's link carried and dropped so far.
    pub fn stats(&self) -> LinkStats {
        let mut s = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats();
        s.send_errors = self.send_errors.load(std::sync::atomic::Ordering::Relaxed);
        s
    }
}

impl AsyncUdpSocket for ImpairedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Sends never block (the link queues or drops), so quinn never
        // waits on this; the inner socket's poller is as good as any.
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let now = Instant::now();
        let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        for datagram in transmit.contents.chunks(size) {
            let fate = link.offer(now, datagram.len());
            if let Fate::Deliver(at) = fate {
                let in_flight = InFlight {
                    at,
                    destination: transmit.destination,
                    ecn: transmit.ecn,
                    src_ip: transmit.src_ip,
                    contents: datagram.to_vec(),
                };
                // Err: the delivery task is gone with the runtime; the
                // datagram is lost like the rest.
                let _ = self.wire.send(in_flight);
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends each datagram through `inner` at its time, in order (the link is
/// FIFO and the delay constant, so times never go back). Ends when the
/// socket is dropped and everything in flight has been delivered.
async fn deliver(
    inner: Arc<dyn AsyncUdpSocket>,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    errors: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut poller = inner.clone().create_io_poller();
    let mut due: VecDeque<InFlight> = VecDeque::new();
    loop {
        let Some(next) = due.pop_front() else {
            match rx.recv().await {
                Some(d) => due.push_back(d),
                None => return,
            }
            continue;
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(next.at)).await;
        // Whatever else arrived meanwhile is later still; keep it in order.
        while let Ok(d) = rx.try_recv() {
            due.push_back(d);
        }
        let transmit = Transmit {
            destination: next.destination,
            ecn: next.ecn,
            contents: &next.contents,
            segment_size: None,
            src_ip: next.src_ip,
        };
        loop {
            match inner.try_send(&transmit) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if poll_fn(|cx| poller.as_mut().poll_writable(cx))
                        .await
                        .is_err()
                    {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                }
                Err(_) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A profile with no bottleneck to speak of and no delay: only loss.
    fn lossy(loss: f64) -> Profile {
        Profile {
            name: "lossy",
            rtt: Duration::ZERO,
            loss,
            rate_bps: 1 << 40,
            queue_bytes: usize::MAX / 2,
        }
    }

    /// The fates of `n` datagrams offered 100 ms apart from `t0`.
    fn fates(profile: Profile, seed: u64, n: usize, t0: Instant) -> Vec<Fate> {
        let mut link = Link::new(profile, seed);
        (0..n)
            .map(|i| link.offer(t0 + Duration::from_millis(100 * i as u64), 1200))
            .collect()
    }

    #[test]
    fn the_loss_rate_is_close_to_the_profile() {
        for p in [Profile::SATELLITE, Profile::BAD_CELLULAR, Profile::HF_RADIO] {
            let mut link = Link::new(lossy(p.loss), 42);
            let t0 = Instant::now();
            let n = 100_000u64;
            for i in 0..n {
                link.offer(t0 + Duration::from_micros(i), 1000);
            }
            let s = link.stats();
            let rate = s.lost as f64 / n as f64;
            // Three standard deviations of a binomial.
            let sd = (p.loss * (1.0 - p.loss) / n as f64).sqrt();
            assert!(
                (rate - p.loss).abs() < 3.0 * sd + 1e-9,
                "{}: lost {rate} of datagrams, profile {}",
                p.name,
                p.loss
            );
            assert_eq!(s.queue_drops, 0);
            assert_eq!(s.delivered(), n - s.lost);
        }
    }

    #[test]
    fn the_same_seed_drops_the_same_datagrams() {
        let p = Profile::BAD_CELLULAR;
        let t0 = Instant::now();
        let a = fates(p, 7, 5_000, t0);
        assert_eq!(a, fates(p, 7, 5_000, t0), "the same fates, the same times");
        let drops = |f: &[Fate]| -> Vec<usize> {
            f.iter()
                .enumerate()
                .filter(|(_, f)| !matches!(f, Fate::Deliver(_)))
                .map(|(i, _)| i)
                .collect()
        };
        let other = fates(p, 8, 5_000, t0);
        assert_ne!(drops(&a), drops(&other), "another seed, other drops");
        // About the profile's share either way (one draw per datagram).
        for f in [&a, &other] {
            let n = drops(f).len();
            assert!((400..600).contains(&n), "{n} of 5,000 dropped");
        }
    }

    #[test]
    fn delay_and_rate_shape_delivery_times() {
        let p = Profile {
            loss: 0.0,
            ..Profile::SATELLITE
        };
        let mut link = Link::new(p, 1);
        let t0 = Instant::now();
        // One datagram on an idle link: serialization plus the one-way delay.
        let wire = 1000 + HEADER_BYTES;
        let one = p.serialization(wire);
        assert_eq!(
            one,
            Duration::from_nanos(1028 * 8 * 1_000_000_000 / 512_000)
        );
        assert_eq!(link.offer(t0, 1000), Fate::Deliver(t0 + one + p.one_way()));
        // A burst at once leaves back to back, at the link rate.
        for k in 2..=10u32 {
            assert_eq!(
                link.offer(t0, 1000),
                Fate::Deliver(t0 + one * k + p.one_way()),
                "datagram {k}"
            );
        }
        // Once the link has drained, a datagram goes at once again.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            link.offer(later, 1000),
            Fate::Deliver(later + one + p.one_way())
        );
    }

    #[test]
    fn a_full_queue_drops_the_tail() {
        let p = Profile {
            loss: 0.0,
            ..Profile::HF_RADIO
        };
        let mut link = Link::new(p, 1);
        let t0 = Instant::now();
        let wire = 1200 + HEADER_BYTES;
        let fit = p.queue_bytes / wire;
        let fates: Vec<Fate> = (0..fit + 5).map(|_| link.offer(t0, 1200)).collect();
        assert!(fates[..fit].iter().all(|f| matches!(f, Fate::Deliver(_))));
        assert!(
            fates[fit..].iter().all(|f| *f == Fate::QueueFull),
            "{fates:?}"
        );
        let s = link.stats();
        assert_eq!(s.queue_drops, 5);
        assert!(s.peak_queue_bytes <= p.queue_bytes as u64);
        // As the link drains, room comes back, one datagram's time at a time.
        let drained = t0 + p.serialization(wire);
        assert!(matches!(link.offer(drained, 1200), Fate::Deliver(_)));
        assert_eq!(link.offer(drained, 1200), Fate::QueueFull);
    }

    #[tokio::test]
    async fn a_socket_delays_paces_and_counts_what_it_sends() {
        let p = Profile {
            name: "test",
            rtt: Duration::from_millis(200),
            loss: 0.0,
            rate_bps: 400_000,
            queue_bytes: 1_000_000,
        };
        let socket = ImpairedSocket::bind("127.0.0.1:0".parse().unwrap(), p, 3).unwrap();
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let n = 20;
        let started = Instant::now();
        for i in 0..n {
            let payload = vec![i as u8; 972]; // 1000 bytes on the wire
            socket
                .try_send(&Transmit {
                    destination: to,
                    ecn: None,
                    contents: &payload,
                    segment_size: None,
                    src_ip: None,
                })
                .unwrap();
        }
        let mut buf = [0u8; 2048];
        let mut arrivals = Vec::new();
        for i in 0..n {
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((len, buf[0]), (972, i as u8), "in order, whole");
            arrivals.push(started.elapsed());
        }
        // 1000 bytes at 400 kbit/s: 20 ms each; then 100 ms one way.
        let first = Duration::from_millis(120);
        let last = Duration::from_millis(100 + 20 * n);
        assert!(arrivals[0] >= first, "{:?}", arrivals[0]);
        assert!(
            arrivals[0] < first + Duration::from_millis(60),
            "{:?}",
            arrivals[0]
        );
        assert!(
            arrivals[n as usize - 1] >= last,
            "{:?}",
            arrivals[n as usize - 1]
        );
        assert!(
            arrivals[n as usize - 1] < last + Duration::from_millis(60),
            "{:?}",
            arrivals[n as usize - 1]
        );
        let s = socket.stats();
        assert_eq!(
            (s.datagrams, s.bytes, s.lost, s.queue_drops),
            (20, 20 * 972, 0, 0)
        );
        assert_eq!(s.send_errors, 0);
    }

    #[tokio::test]
    async fn a_gso_batch_is_shaped_datagram_by_datagram() {
        let p = Profile {
            loss: 0.0,
            ..Profile::SATELLITE
        };
        let socket = ImpairedSocket::bind("127.0.0.1:0".parse().unwrap(), p, 3).unwrap();
        assert_eq!(socket.max_transmit_segments(), 1);
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let batch = vec![5u8; 2500];
        socket
            .try_send(&Transmit {
                destination: rx.local_addr().unwrap(),
                ecn: None,
                contents: &batch,
                segment_size: Some(1000),
                src_ip: None,
            })
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut lens = Vec::new();
        for _ in 0..3 {
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            lens.push(len);
        }
        assert_eq!(lens, [1000, 1000, 500]);
        assert_eq!(socket.stats().datagrams, 3);
    }
}
