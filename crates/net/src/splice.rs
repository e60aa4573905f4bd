//! Bidirectional copy between two byte streams (a tunnel stream and the next hop or target),
//! with a buffer size, an idle timeout, a maximum lifetime, half-close, and a byte meter per
//! direction for network-usage accounting.
//!
//! It moves bytes only; what the streams are, and what to report when a splice fails, is the
//! caller's business.

use std::fmt;
use std::future::{poll_fn, Future as _};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Limits for one splice.
#[derive(Debug, Clone)]
pub struct SpliceLimits {
    /// Size of a direction's buffer when its first bytes arrive (none is held before).
    pub buffer_size: usize,
    /// A direction whose reads keep filling its buffer (a bulk transfer) has the buffer
    /// doubled, up to this size, so a large copy moves in few large writes (one HTTP/2 frame
    /// or TLS record batch each) while interactive streams stay small. Below
    /// `buffer_size`, `buffer_size` is used.
    pub max_buffer_size: usize,
    /// End the splice after this long regardless of traffic (`maxtime`).
    pub max_lifetime: Option<Duration>,
    /// End the splice when no byte moved in either direction for this long.
    pub idle_timeout: Option<Duration>,
    /// `true`: when one side reaches EOF, shut down the other side's write half and keep the
    /// opposite direction running until it ends too. `false`: the first EOF ends both
    /// directions (the original client's strict mode).
    pub half_close: bool,
}

impl Default for SpliceLimits {
    fn default() -> Self {
        Self {
            buffer_size: 16 << 10,
            max_buffer_size: 256 << 10,
            max_lifetime: None,
            idle_timeout: Some(Duration::from_secs(900)),
            half_close: true,
        }
    }
}

/// Which way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the first stream to the second.
    AToB,
    /// From the second stream to the first.
    BToA,
}

/// Which stream an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first stream.
    A,
    /// The second stream.
    B,
}

/// What was being done when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reading.
    Read,
    /// Writing or flushing.
    Write,
    /// Shutting down the write half.
    Shutdown,
}

/// Bytes written in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes written to B that were read from A.
    pub a_to_b: u64,
    /// Bytes written to A that were read from B.
    pub b_to_a: u64,
}

impl fmt::Display for Transferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes a->b, {} bytes b->a", self.a_to_b, self.b_to_a)
    }
}

/// Why a splice ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpliceError {
    /// Nothing moved for the idle limit.
    #[error("no data in either direction for {limit:?} ({transferred})")]
    Idle {
        /// The limit.
        limit: Duration,
        /// Bytes moved before.
        transferred: Transferred,
    },
    /// The maximum lifetime was reached.
    #[error("maximum lifetime of {limit:?} reached ({transferred})")]
    MaxLifetime {
        /// The limit.
        limit: Duration,
        /// Bytes moved before.
        transferred: Transferred,
    },
    /// A stream failed.
    #[error("{op:?} on side {side:?} failed: {source} ({transferred})")]
    Io {
        /// Which stream.
        side: Side,
        /// What was being done.
        op: Op,
        /// The error.
        source: io::Error,
        /// Bytes moved before.
        transferred: Transferred,
    },
}

impl SpliceError {
    /// Bytes moved before the splice ended.
    pub fn transferred(&self) -> Transferred {
        match self {
            SpliceError::Idle { transferred, .. }
            | SpliceError::MaxLifetime { transferred, .. }
            | SpliceError::Io { transferred, .. } => *transferred,
        }
    }
}

/// Bytes the first read of a direction takes from the stack, before its buffer exists.
const PROBE: usize = 1024;

/// One direction's copy state. The buffer is allocated when the first byte arrives, so an
/// idle stream (most of them, on a busy relay) holds no copy buffers at all.
struct Half {
    buf: Box<[u8]>,
    size: usize,
    max: usize,
    /// The last read filled the whole buffer: grow it before the next one.
    full: bool,
    pos: usize,
    cap: usize,
    read_done: bool,
    shut: bool,
    need_flush: bool,
    done: bool,
    total: u64,
    /// A read error met while topping up the buffer, reported once the buffer is written.
    read_err: Option<io::Error>,
}

impl Half {
    fn new(size: usize, max: usize) -> Self {
        let size = size.max(1);
        Self {
            buf: Box::default(),
            size,
            max: max.max(size),
            full: false,
            pos: 0,
            cap: 0,
            read_done: false,
            shut: false,
            need_flush: false,
            done: false,
            total: 0,
            read_err: None,
        }
    }

    /// Tops the buffer up with whatever the reader has ready right now, so one write (and
    /// one frame or syscall downstream) carries several small reads, e.g. HTTP/2 DATA
    /// frames. Never waits; an EOF or a read error is remembered and acted on after the
    /// buffered bytes are written.
    fn fill_more<R>(&mut self, cx: &mut Context<'_>, reader: &mut R)
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        while self.cap < self.buf.len() {
            let mut rb = ReadBuf::new(&mut self.buf[self.cap..]);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.read_done = true;
                        return;
                    }
                    self.cap += n;
                }
                Poll::Ready(Err(err)) => {
                    self.read_err = Some(err);
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    /// The direction's first read, before a buffer exists: into a small stack buffer, and
    /// only when bytes arrive is the buffer allocated (with them in it, topped up).
    fn poll_first<R>(&mut self, cx: &mut Context<'_>, reader: &mut R) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        let mut probe = [0u8; PROBE];
        let len = PROBE.min(self.size);
        let mut rb = ReadBuf::new(&mut probe[..len]);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            self.read_done = true;
            return Poll::Ready(Ok(()));
        }
        let mut buf = vec![0u8; self.size].into_boxed_slice();
        buf[..n].copy_from_slice(&probe[..n]);
        self.buf = buf;
        self.cap = n;
        self.fill_more(cx, reader);
        Poll::Ready(Ok(()))
    }

    /// Copies until the reader is pending or at EOF; on EOF shuts the writer down.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        progressed: &mut bool,
        meter: &mut dyn FnMut(usize),
    ) -> Poll<Result<(), (Op, bool, io::Error)>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        // The bool in the error is true when the reader (not the writer) failed.
        loop {
            while self.pos < self.cap {
                let n = match ready!(
                    Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.cap])
                ) {
                    Ok(0) => {
                        return Poll::Ready(Err((
                            Op::Write,
                            false,
                            io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes"),
                        )))
                    }
                    Ok(n) => n,
                    Err(err) => return Poll::Ready(Err((Op::Write, false, err))),
                };
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
                *progressed = true;
                meter(n);
            }
            if self.read_done {
                if !self.shut {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx))
                        .map_err(|err| (Op::Shutdown, false, err))?;
                    self.shut = true;
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = self.read_err.take() {
                return Poll::Ready(Err((Op::Read, true, err)));
            }
            self.pos = 0;
            self.cap = 0;
            if self.full && self.buf.len() < self.max {
                let len = (self.buf.len() * 2).min(self.max);
                self.buf = vec![0u8; len].into_boxed_slice();
            }
            self.full = false;
            if self.buf.is_empty() {
                match self.poll_first(cx, reader) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err((Op::Read, true, err))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    // Nothing more to read for now: push out what writers buffered (TLS).
                    if self.need_flush {
                        match Pin::new(&mut *writer).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(err)) => {
                                return Poll::Ready(Err((Op::Write, false, err)))
                            }
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err((Op::Read, true, err))),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.read_done = true;
                    } else {
                        self.cap = n;
                        self.fill_more(cx, reader);
                        self.full = self.cap == self.buf.len();
                    }
                }
            }
        }
    }
}

/// Copies `a` → `b` and `b` → `a` until both directions end (or, without half-close, one
/// does), calling `meter(direction, bytes)` for every write. Returns the bytes moved.
pub async fn splice<A, B, M>(
    a: &mut A,
    b: &mut B,
    limits: &SpliceLimits,
    mut meter: M,
) -> Result<Transferred, SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    M: FnMut(Direction, usize),
{
    let mut ab = Half::new(limits.buffer_size, limits.max_buffer_size);
    let mut ba = Half::new(limits.buffer_size, limits.max_buffer_size);
    let mut lifetime = limits
        .max_lifetime
        .map(|limit| (limit, Box::pin(tokio::time::sleep(limit))));
    let mut idle = limits
        .idle_timeout
        .map(|limit| (limit, Box::pin(tokio::time::sleep(limit))));
    let mut last_progress = Instant::now();

    poll_fn(|cx| {
        let mut progressed = false;
        let transferred = |ab: &Half, ba: &Half| Transferred {
            a_to_b: ab.total,
            b_to_a: ba.total,
        };
        if !ab.done {
            let mut m = |n| meter(Direction::AToB, n);
            if let Poll::Ready(Err((op, reader_failed, source))) =
                ab.poll_copy(cx, &mut *a, &mut *b, &mut progressed, &mut m)
            {
                let side = if reader_failed { Side::A } else { Side::B };
                return Poll::Ready(Err(SpliceError::Io {
                    side,
                    op,
                    source,
                    transferred: transferred(&ab, &ba),
                }));
            }
            if ab.done && !limits.half_close {
                ba.read_done = true;
            }
        }
        if !ba.done {
            let mut m = |n| meter(Direction::BToA, n);
            if let Poll::Ready(Err((op, reader_failed, source))) =
                ba.poll_copy(cx, &mut *b, &mut *a, &mut progressed, &mut m)
            {
                let side = if reader_failed { Side::B } else { Side::A };
                return Poll::Ready(Err(SpliceError::Io {
                    side,
                    op,
                    source,
                    transferred: transferred(&ab, &ba),
                }));
            }
            if ba.done && !limits.half_close && !ab.done {
                ab.read_done = true;
                // Give the a->b side a chance to write out and shut down right away.
                let mut m = |n| meter(Direction::AToB, n);
                if let Poll::Ready(Err((op, _, source))) =
                    ab.poll_copy(cx, &mut *a, &mut *b, &mut progressed, &mut m)
                {
                    return Poll::Ready(Err(SpliceError::Io {
                        side: Side::B,
                        op,
                        source,
                        transferred: transferred(&ab, &ba),
                    }));
                }
            }
        }
        if ab.done && ba.done {
            return Poll::Ready(Ok(transferred(&ab, &ba)));
        }

        if let Some((limit, timer)) = lifetime.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(SpliceError::MaxLifetime {
                    limit: *limit,
                    transferred: transferred(&ab, &ba),
                }));
            }
        }
        if progressed {
            last_progress = Instant::now();
        }
        if let Some((limit, timer)) = idle.as_mut() {
            while timer.as_mut().poll(cx).is_ready() {
                let deadline = last_progress + *limit;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(SpliceError::Idle {
                        limit: *limit,
                        transferred: transferred(&ab, &ba),
                    }));
                }
                timer.as_mut().reset(deadline);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn buffers_are_allocated_only_when_bytes_arrive() {
        let (mut feed, mut reader) = tokio::io::duplex(1 << 16);
        let (mut writer, mut sink) = tokio::io::duplex(1 << 16);
        let mut half = Half::new(4 << 10, 16 << 10);
        let mut progressed = false;
        let mut poll_once = |half: &mut Half| {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let mut meter = |_| {};
            let _ = half.poll_copy(
                &mut cx,
                &mut reader,
                &mut writer,
                &mut progressed,
                &mut meter,
            );
        };
        poll_once(&mut half);
        assert!(half.buf.is_empty(), "an idle direction holds no buffer");
        // More than the probe reads at once: the rest is topped up into the real buffer.
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
        feed.write_all(&data).await.unwrap();
        poll_once(&mut half);
        assert_eq!(half.buf.len(), 4 << 10);
        let mut got = vec![0u8; data.len()];
        sink.read_exact(&mut got).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(half.total, data.len() as u64);
        // A bulk transfer (every read fills the buffer) doubles it up to the maximum.
        let bulk: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
        let expect = bulk.clone();
        let pump = tokio::spawn(async move { feed.write_all(&bulk).await.map(|()| feed) });
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..100_000 {
            if got.len() >= expect.len() {
                break;
            }
            poll_once(&mut half);
            sizes.push(half.buf.len());
            let mut chunk = vec![0u8; 1 << 16];
            let wait = std::time::Duration::from_millis(1);
            if let Ok(n) = tokio::time::timeout(wait, sink.read(&mut chunk)).await {
                got.extend_from_slice(&chunk[..n.unwrap()]);
            }
        }
        assert_eq!(got, expect);
        assert!(sizes.iter().all(|&s| s <= 16 << 10), "{sizes:?}");
        assert!(
            sizes.contains(&(16 << 10)),
            "a bulk direction grows: {sizes:?}"
        );
        drop(pump.await.unwrap());
    }

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let (mut a_outer, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_outer) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            let limits = SpliceLimits {
                buffer_size: 100,
                ..SpliceLimits::default()
            };
            let mut counts = [0u64; 2];
            let t = splice(&mut a, &mut b, &limits, |d, n| {
                counts[usize::from(d == Direction::BToA)] += n as u64
            })
            .await
            .unwrap();
            (t, counts)
        });
        let up: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..7_000u32).map(|i| (i % 13) as u8).collect();
        let up2 = up.clone();
        let writer = tokio::spawn(async move {
            a_outer.write_all(&up2).await.unwrap();
            a_outer.shutdown().await.unwrap();
            let mut got = Vec::new();
            a_outer.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got_up = Vec::new();
        b_outer.read_to_end(&mut got_up).await.unwrap();
        assert_eq!(got_up, up, "a->b bytes and EOF propagated");
        b_outer.write_all(&down).await.unwrap();
        b_outer.shutdown().await.unwrap();
        let got_down = writer.await.unwrap();
        assert_eq!(got_down, down);
        let (t, counts) = task.await.unwrap();
        assert_eq!(t.a_to_b, up.len() as u64);
        assert_eq!(t.b_to_a, down.len() as u64);
        assert_eq!(counts, [t.a_to_b, t.b_to_a]);
    }

    #[tokio::test]
    async fn strict_mode_ends_on_first_eof() {
        let (mut a_outer, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_outer) = tokio::io::duplex(1024);
        let limits = SpliceLimits {
            half_close: false,
            ..SpliceLimits::default()
        };
        let task = tokio::spawn(async move { splice(&mut a, &mut b, &limits, |_, _| {}).await });
        a_outer.write_all(b"bye").await.unwrap();
        a_outer.shutdown().await.unwrap();
        // b never closes, yet the splice ends and b sees EOF after the data.
        let t = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("strict splice ends on first EOF")
            .unwrap()
            .unwrap();
        assert_eq!(t.a_to_b, 3);
        let mut got = Vec::new();
        b_outer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_without_traffic() {
        let (mut a_outer, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_outer) = tokio::io::duplex(1024);
        let limits = SpliceLimits {
            idle_timeout: Some(Duration::from_secs(10)),
            ..SpliceLimits::default()
        };
        let task = tokio::spawn(async move { splice(&mut a, &mut b, &limits, |_, _| {}).await });
        let mut buf = [0u8; 1];
        // Traffic every 6 s keeps it alive past 10 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            a_outer.write_all(b"x").await.unwrap();
            b_outer.read_exact(&mut buf).await.unwrap();
        }
        assert!(!task.is_finished());
        let started = Instant::now();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, SpliceError::Idle { .. }), "{err}");
        assert_eq!(err.transferred().a_to_b, 3);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_lifetime_ends_a_busy_splice() {
        let (mut a_outer, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_outer) = tokio::io::duplex(1024);
        let limits = SpliceLimits {
            max_lifetime: Some(Duration::from_secs(5)),
            ..SpliceLimits::default()
        };
        let task = tokio::spawn(async move { splice(&mut a, &mut b, &limits, |_, _| {}).await });
        let mut buf = [0u8; 1];
        let mut n = 0;
        while !task.is_finished() && n < 100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if a_outer.write_all(b"x").await.is_ok() {
                let _ = b_outer.read_exact(&mut buf).await;
            }
            n += 1;
        }
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, SpliceError::MaxLifetime { .. }), "{err}");
        assert!(n <= 7, "ended after {n} s");
    }

    #[tokio::test]
    async fn read_error_names_the_side() {
        let (mut b, _b_outer) = tokio::io::duplex(1024);
        let r = splice(&mut Failing, &mut b, &SpliceLimits::default(), |_, _| {}).await;
        match r {
            Err(SpliceError::Io { side, op, .. }) => {
                assert_eq!(side, Side::A);
                assert_eq!(op, Op::Read);
            }
            other => panic!("expected a read error on A, got {other:?}"),
        }
    }

    /// A stream whose reads fail.
    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "boom")))
        }
    }

    impl AsyncWrite for Failing {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
