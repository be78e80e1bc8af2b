//! A UDP impairment proxy: this kernel has no `netem` qdisc (TEST-PEERS.md), so loss and delay
//! are made in user space. It stands in front of a UDP server (coturn): every client datagram
//! goes upstream untouched from a socket of its own; every answer coming back is dropped with
//! probability `loss` and otherwise delivered after `delay`. With relay-only ICE each media
//! packet crosses it exactly once on its way down to its receiver, so the path between any two
//! peers sees that loss and that one-way delay.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ImpairStats {
    pub up: AtomicU64,
    pub down: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Impairment {
    pub port: u16,
    pub stats: Arc<ImpairStats>,
    stop: Arc<AtomicBool>,
    /// The loss share in millionths, changeable while running (0 = a clean path).
    loss_ppm: Arc<AtomicU64>,
}

/// SplitMix64: a seeded, reproducible sequence (the drop decisions here; the kill points and
/// generated inputs of tests).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Impairment {
    /// Starts a proxy on loopback in front of `upstream`.
    pub fn start(upstream: SocketAddr, loss: f64, delay: Duration, seed: u64) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy socket: {e}"));
        let port = front
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"))
            .port();
        front
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap_or_else(|e| panic!("proxy timeout: {e}"));
        let front = Arc::new(front);
        let stats = Arc::new(ImpairStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let loss_ppm = Arc::new(AtomicU64::new((loss.clamp(0.0, 1.0) * 1e6) as u64));
        let (delayed_tx, delayed_rx) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
        // The delay line: constant delay, so first in is first due.
        {
            let front = front.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while let Ok((due, bytes, to)) = delayed_rx.recv() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let _ = front.send_to(&bytes, to);
                }
            });
        }
        let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let rng = Arc::new(Mutex::new(seed));
        {
            let (stats, stop, loss_ppm) = (stats.clone(), stop.clone(), loss_ppm.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    let socket = {
                        let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(s) = clients.get(&from) {
                            s.clone()
                        } else {
                            let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
                                continue;
                            };
                            if s.connect(upstream).is_err()
                                || s.set_read_timeout(Some(Duration::from_millis(100)))
                                    .is_err()
                            {
                                continue;
                            }
                            let s = Arc::new(s);
                            clients.insert(from, s.clone());
                            // Answers for this client: impaired on their way down.
                            let (s2, tx, stats, stop, rng, loss_ppm) = (
                                s.clone(),
                                delayed_tx.clone(),
                                stats.clone(),
                                stop.clone(),
                                rng.clone(),
                                loss_ppm.clone(),
                            );
                            std::thread::spawn(move || {
                                let mut buf = vec![0u8; 65_536];
                                while !stop.load(Ordering::Relaxed) {
                                    let Ok(n) = s2.recv(&mut buf) else { continue };
                                    let roll = {
                                        let mut r = rng.lock().unwrap_or_else(|p| p.into_inner());
                                        splitmix64(&mut r) % 1_000_000
                                    };
                                    if roll < loss_ppm.load(Ordering::Relaxed) {
                                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                                        continue;
                                    }
                                    stats.down.fetch_add(1, Ordering::Relaxed);
                                    if tx
                                        .send((Instant::now() + delay, buf[..n].to_vec(), from))
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                            });
                            s
                        }
                    };
                    stats.up.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send(&buf[..n]);
                }
            });
        }
        Self {
            port,
            stats,
            stop,
            loss_ppm,
        }
    }

    /// `turn:` URL of the proxy (for the visit service's TURN settings).
    pub fn turn_url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Changes the loss share from now on (e.g. to 0 to show recovery).
    pub fn set_loss(&self, loss: f64) {
        self.loss_ppm
            .store((loss.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_late_and_some_are_dropped() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let server_addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        });
        let proxy = Impairment::start(server_addr, 0.2, Duration::from_millis(50), 7);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("{e}"));
        let target = format!("127.0.0.1:{}", proxy.port);
        let mut answered = 0;
        for i in 0..50u8 {
            let sent = Instant::now();
            client
                .send_to(&[i], &target)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 8];
            if let Ok((1, _)) = client.recv_from(&mut buf) {
                assert_eq!(buf[0], i);
                assert!(sent.elapsed() >= Duration::from_millis(50), "delayed");
                answered += 1;
            }
        }
        let dropped = proxy.stats.dropped.load(Ordering::Relaxed);
        assert_eq!(answered + dropped, 50);
        // 20 % of 50 with this seed: some dropped, most through.
        assert!((3..=20).contains(&dropped), "dropped {dropped}");
    }
}
