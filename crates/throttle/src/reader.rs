//! [`ThrottledReader`]: pace reads through a [`Throttle`].

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use crate::Throttle;

type Pending = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Wraps a [`std::io::Read`] or a [`tokio::io::AsyncRead`] so that reads through it are
/// throttled: for uploads streamed from files and for restore reads.
///
/// Each read is capped at [`Throttle::piece_size`] and paid for *after* it returns, for exactly
/// the bytes read, so many small files waste nothing and the stream is paced in small steps.
/// The `Read` impl blocks (use it off the async runtime); the `AsyncRead` impl does not.
pub struct ThrottledReader<R> {
    inner: R,
    throttle: Throttle,
    /// Async only: bytes read from `inner` and not yet handed to the caller.
    stash: Vec<u8>,
    pos: usize,
    /// Async only: the payment for `stash`, which must finish before the bytes are released.
    pending: Option<Pending>,
}

impl<R> ThrottledReader<R> {
    /// Wraps `inner`, charging its reads to `throttle`.
    pub fn new(inner: R, throttle: Throttle) -> ThrottledReader<R> {
        ThrottledReader {
            inner,
            throttle,
            stash: Vec::new(),
            pos: 0,
            pending: None,
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader, mutably (reading from it directly bypasses the throttle).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The throttle the reads are charged to.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Unwraps the reader. Bytes already read by the async side and not yet returned are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn cap(&self, len: usize) -> usize {
        let piece = usize::try_from(self.throttle.piece_size()).unwrap_or(usize::MAX);
        len.min(piece.max(1))
    }
}

impl<R: Read> Read for ThrottledReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = self.cap(buf.len());
        let n = self.inner.read(&mut buf[..limit])?;
        self.throttle.acquire_blocking(n as u64);
        Ok(n)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ThrottledReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(payment) = this.pending.as_mut() {
                ready!(payment.as_mut().poll(cx));
                this.pending = None;
            }
            if this.pos < this.stash.len() {
                let n = buf.remaining().min(this.stash.len() - this.pos);
                buf.put_slice(&this.stash[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            // Read into our own buffer: bytes put into `buf` before returning `Pending` would
            // be forgotten by the caller.
            let want = this.cap(buf.remaining());
            this.stash.clear();
            this.stash.resize(want, 0);
            this.pos = 0;
            let mut inner_buf = ReadBuf::new(&mut this.stash);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut inner_buf);
            let n = inner_buf.filled().len();
            // Nothing counts as stashed unless the read completed.
            this.stash
                .truncate(if matches!(polled, Poll::Ready(Ok(()))) {
                    n
                } else {
                    0
                });
            ready!(polled)?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            this.pending = Some(Box::pin(this.throttle.acquire_owned(n as u64)));
        }
    }
}

impl<R: fmt::Debug> fmt::Debug for ThrottledReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottledReader")
            .field("inner", &self.inner)
            .field("throttle", &self.throttle)
            .field("stashed", &(self.stash.len() - self.pos))
            .finish_non_exhaustive()
    }
}
