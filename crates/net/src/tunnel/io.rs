//! Byte-stream adapters over h2 streams shared by both tunnel ends: reading a body with
//! prompt release of flow-control capacity, and writing within the granted send capacity.

use bytes::{Buf as _, Bytes};
use h2::{Reason, RecvStream, SendStream};
use std::io;
use std::task::{ready, Context, Poll};
use tokio::io::ReadBuf;

/// Largest chunk queued per write: one default-sized DATA frame. It bounds what one write
/// asks of the flow-control window, and keeps each copy below glibc's mmap threshold (larger
/// buffers were fresh mappings each time, and page faults showed up in profiles).
const MAX_WRITE_CHUNK: usize = 64 << 10;

/// Reads a body into caller buffers, keeping the unread rest of the last DATA frame.
pub(crate) struct BodyReader {
    recv: RecvStream,
    pending: Bytes,
}

/// What one read step produced.
pub(crate) enum ReadStep {
    /// Bytes were copied into the buffer.
    Data,
    /// The body ended cleanly (END_STREAM); trailers may follow.
    End,
}

impl BodyReader {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            pending: Bytes::new(),
        }
    }

    pub(crate) fn recv_mut(&mut self) -> &mut RecvStream {
        &mut self.recv
    }

    /// Makes body bytes available without copying them out: `Data` when some are buffered
    /// for the next [`BodyReader::poll_read`], `End` at END_STREAM.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReadStep, h2::Error>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    // Releasing can only fail if the stream is already gone; the next poll
                    // reports that. An empty frame (a bare END_STREAM) loops on: a 0-byte
                    // read would look like EOF to the caller.
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.pending = chunk;
                }
                Some(Err(err)) => return Poll::Ready(Err(err)),
                None => return Poll::Ready(Ok(ReadStep::End)),
            }
        }
        Poll::Ready(Ok(ReadStep::Data))
    }

    /// Copies body bytes into `buf`. Capacity is released as soon as a frame arrives: the
    /// leftover it leaves here is bounded by one frame, and the peer can keep sending.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<ReadStep, h2::Error>> {
        if let ReadStep::End = ready!(self.poll_fill(cx))? {
            return Poll::Ready(Ok(ReadStep::End));
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(ReadStep::Data))
    }
}

/// Writes `buf` into `send` within the capacity h2 grants, so a fast writer waits for the
/// peer's window instead of queueing unbounded data.
pub(crate) fn poll_write(
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        return Poll::Ready(Ok(0));
    }
    let want = buf.len().min(MAX_WRITE_CHUNK);
    // Capacity left over from an earlier grant is usable at once; poll_capacity only reports
    // increases, so asking it again would wait for nothing.
    let mut cap = send.capacity();
    if cap == 0 {
        send.reserve_capacity(want);
        cap = match ready!(send.poll_capacity(cx)) {
            Some(Ok(n)) => n,
            Some(Err(err)) => return Poll::Ready(Err(h2_to_io(err))),
            None => return poll_reset_error(send, cx),
        };
        if cap == 0 {
            // Spurious grant: nothing was actually assigned. Ask again to register a wakeup.
            send.reserve_capacity(want);
            return match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(n))) if n > 0 => write_now(send, buf, n),
                Poll::Ready(Some(Err(err))) => Poll::Ready(Err(h2_to_io(err))),
                Poll::Ready(None) => poll_reset_error(send, cx),
                _ => Poll::Pending,
            };
        }
    }
    write_now(send, buf, cap)
}

/// Vectored form of [`poll_write`]: gathers the slices (e.g. several TLS records of a nested
/// hop) into one DATA payload, so one write becomes one frame instead of one per slice.
pub(crate) fn poll_write_vectored(
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
        return Poll::Ready(Ok(0));
    };
    if total == first.len() {
        return poll_write(send, cx, first);
    }
    let want = total.min(MAX_WRITE_CHUNK);
    let mut cap = send.capacity();
    if cap == 0 {
        send.reserve_capacity(want);
        cap = match ready!(send.poll_capacity(cx)) {
            Some(Ok(n)) => n,
            Some(Err(err)) => return Poll::Ready(Err(h2_to_io(err))),
            None => return poll_reset_error(send, cx),
        };
        if cap == 0 {
            return poll_write(send, cx, first);
        }
    }
    let n = cap.min(want);
    let mut payload = bytes::BytesMut::with_capacity(n);
    for b in bufs {
        let take = (n - payload.len()).min(b.len());
        payload.extend_from_slice(&b[..take]);
        if payload.len() == n {
            break;
        }
    }
    match send.send_data(payload.freeze(), false) {
        Ok(()) => Poll::Ready(Ok(n)),
        Err(err) => Poll::Ready(Err(h2_to_io(err))),
    }
}

fn write_now(send: &mut SendStream<Bytes>, buf: &[u8], cap: usize) -> Poll<io::Result<usize>> {
    let n = cap.min(buf.len()).min(MAX_WRITE_CHUNK);
    match send.send_data(Bytes::copy_from_slice(&buf[..n]), false) {
        Ok(()) => Poll::Ready(Ok(n)),
        Err(err) => Poll::Ready(Err(h2_to_io(err))),
    }
}

/// The send side is closed: report why (the peer's reset reason, or a broken pipe).
fn poll_reset_error(send: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    match send.poll_reset(cx) {
        Poll::Ready(Ok(reason)) => Poll::Ready(Err(reset_to_io(reason))),
        Poll::Ready(Err(err)) => Poll::Ready(Err(h2_to_io(err))),
        Poll::Pending => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "tunnel send side already closed",
        ))),
    }
}

fn reset_to_io(reason: Reason) -> io::Error {
    let kind = if reason == Reason::NO_ERROR || reason == Reason::CANCEL {
        io::ErrorKind::BrokenPipe
    } else {
        io::ErrorKind::ConnectionReset
    };
    io::Error::new(kind, format!("tunnel stream reset by peer: {reason}"))
}

/// An h2 error as an I/O error, keeping the transport's own error when there is one.
pub(crate) fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        match err.into_io() {
            Some(io_err) => io_err,
            None => io::Error::new(io::ErrorKind::ConnectionReset, "HTTP/2 transport error"),
        }
    } else {
        let kind = match err.reason() {
            Some(Reason::NO_ERROR) | Some(Reason::CANCEL) => io::ErrorKind::BrokenPipe,
            _ => io::ErrorKind::ConnectionReset,
        };
        io::Error::new(kind, crate::tunnel::TunnelError::H2(err))
    }
}

/// Whether an error is the peer's RST_STREAM(NO_ERROR), which §14.4 tells us to tolerate.
pub(crate) fn is_reset_no_error(err: &h2::Error) -> bool {
    err.is_reset() && err.reason() == Some(Reason::NO_ERROR)
}
