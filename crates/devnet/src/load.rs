//! A steady client load through the devnet's SOCKS port, for measuring what an operation
//! (an upgrade, a restart) costs users: requests that failed, and the longest time during
//! which no request completed.
//!
//! Each worker sends one request at a time (a SOCKS CONNECT through the circuit and an HTTP
//! GET), so a gap in service shows up as a gap between completions. The load is bounded: it
//! stops when asked or after `max_requests` per worker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed (any error or another status).
    pub failed: u64,
    /// The longest time between two successful completions (or from the start to the first).
    pub longest_gap: Duration,
    /// How long the load ran.
    pub elapsed: Duration,
    /// The first few errors.
    pub errors: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} failed, longest gap {} ms over {:.1} s",
            self.ok,
            self.failed,
            self.longest_gap.as_millis(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    state: Arc<Mutex<State>>,
    started: Instant,
}

#[derive(Debug)]
struct State {
    report: LoadReport,
    last_ok: Instant,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Load {
    /// Starts `workers` threads each GETting `http://{host}:{port}{path}` through `socks`
    /// back to back, at most `max_requests` each.
    pub fn start(
        socks: SocketAddr,
        host: &str,
        port: u16,
        path: &str,
        workers: usize,
        max_requests: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let state = Arc::new(Mutex::new(State {
            report: LoadReport::default(),
            last_ok: started,
        }));
        let workers = (0..workers)
            .map(|_| {
                let stop = stop.clone();
                let state = state.clone();
                let host = host.to_string();
                let path = path.to_string();
                std::thread::spawn(move || {
                    for _ in 0..max_requests {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let r = crate::probe::http_via_socks(
                            socks,
                            &host,
                            port,
                            &path,
                            Duration::from_secs(15),
                        );
                        let now = Instant::now();
                        let mut st = lock(&state);
                        match r {
                            Ok((200, _)) => {
                                let gap = now.duration_since(st.last_ok);
                                st.report.longest_gap = st.report.longest_gap.max(gap);
                                st.last_ok = now;
                                st.report.ok += 1;
                            }
                            other => {
                                st.report.failed += 1;
                                if st.report.errors.len() < 10 {
                                    let e = match other {
                                        Ok((code, _)) => format!("status {code}"),
                                        Err(e) => format!("{e:#}"),
                                    };
                                    st.report.errors.push(e);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            workers,
            state,
            started,
        }
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        lock(&self.state).report.ok
    }

    /// Waits until `n` more requests succeeded (at most `max`); false on timeout.
    pub fn settle(&self, n: u64, max: Duration) -> bool {
        let want = self.ok() + n;
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            if self.ok() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops the workers and returns what they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
        let mut st = lock(&self.state);
        st.report.elapsed = self.started.elapsed();
        st.report.clone()
    }
}
