//! A reader fed by another thread, through a bounded queue of chunks: one stage of a stream
//! (reading and inflating a layer, say) runs on its own core while the reader's side (parsing
//! the tar inside it) runs on another. Memory is bounded by the queue (`depth` chunks of
//! `chunk` bytes), never by the stream.
//!
//! Written here rather than taken from a crate: it is a `sync_channel` and a cursor; the
//! pipe crates (`os_pipe`, `pipe`) copy through the kernel or hold unbounded buffers.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// The writing end, given to the producing thread.
#[derive(Debug)]
pub struct Feed {
    tx: SyncSender<io::Result<Vec<u8>>>,
    chunk: usize,
}

/// The reading end.
#[derive(Debug)]
pub struct Drain {
    rx: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

/// A bounded pipe of `depth` chunks of `chunk` bytes.
pub fn pipe(chunk: usize, depth: usize) -> (Feed, Drain) {
    let (tx, rx) = sync_channel(depth);
    (Feed { tx, chunk: chunk.max(1) }, Drain { rx, current: Vec::new(), at: 0, done: false })
}

impl Feed {
    /// Copies `from` into the pipe to its end. A read error is passed on to the reader, at
    /// the point of the stream where it happened, and returned. `Ok(false)` when the reader
    /// went away (it stopped early: its own error, or it had read what it needed).
    pub fn copy_from(&self, from: &mut impl Read) -> io::Result<bool> {
        loop {
            let mut buf = vec![0u8; self.chunk];
            let mut filled = 0;
            while filled < buf.len() {
                match from.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let copy = io::Error::new(e.kind(), e.to_string());
                        let _ = self.tx.send(Err(copy));
                        return Err(e);
                    }
                }
            }
            if filled == 0 {
                return Ok(true);
            }
            buf.truncate(filled);
            if self.tx.send(Ok(buf)).is_err() {
                return Ok(false);
            }
        }
    }
}

impl Read for Drain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The feeding side finished (dropped its end): the stream ends here.
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_arrive_whole_and_in_order_and_an_error_arrives_where_it_happened() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (feed, mut drain) = pipe(1000, 2);
        let src = data.clone();
        let t = std::thread::spawn(move || feed.copy_from(&mut &src[..]).unwrap());
        let mut got = Vec::new();
        drain.read_to_end(&mut got).unwrap();
        assert!(t.join().unwrap());
        assert_eq!(got, data);

        // A source that fails after 2,500 bytes: the reader gets those bytes, then the error.
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt deflate stream"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let (feed, mut drain) = pipe(1000, 2);
        let t = std::thread::spawn(move || feed.copy_from(&mut Failing(2500)));
        let mut got = Vec::new();
        let e = drain.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.to_string(), "corrupt deflate stream");
        assert_eq!(got.len(), 2000, "the whole chunks before the failing one");
        assert!(t.join().unwrap().is_err());

        // The reader stops early: the feeder is told, and stops too.
        let (feed, drain) = pipe(10, 1);
        drop(drain);
        assert!(!feed.copy_from(&mut &data[..]).unwrap());
    }
}
