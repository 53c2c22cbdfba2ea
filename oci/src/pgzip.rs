//! Parallel gzip whose bytes do not depend on the number of threads.
//!
//! Compression is the bottleneck of image building (shared/PERFORMANCE.md: tar and sha256 run
//! at over 1 GB/s, deflate level 6 at about 55 MB/s on one core). As pigz does, the input is
//! cut into fixed 128 KiB blocks; each block is deflated on its own, primed with the last
//! 32 KiB of the input before it as dictionary, and ended with a sync flush (the last with
//! finish). The blocks are concatenated in order into one gzip member. Since the output of a
//! block depends only on its input, its dictionary, the level and whether it is last, the
//! stream is the same for one thread or many.
//!
//! flate2 does the deflating (zlib-rs backend); this module only splits, schedules and
//! frames, which neither flate2 nor any maintained crate does deterministically (gzp's
//! output depends on its buffer flushing; zune/libdeflate are single-block APIs).
//!
//! Format 2 ([`LayerGzip::V2`]) keeps the blocks and the scheduling but deflates each block
//! with libdeflate into a gzip member of its own (header, deflate, CRC32 and size), with no
//! dictionary: libdeflate is a whole-buffer compressor (no dictionary, no sync flush), and a
//! multi-member gzip stream is valid (RFC 1952 §2.2) and read by every layer consumer. Its
//! bytes too depend only on each block.
//!
//! Format 3 ([`LayerGzip::V3`]) is format 2 at level 2 ([`V3_LEVEL`]) with one more rule: a
//! block that samples show to be incompressible is stored (deflate's stored blocks, libdeflate
//! level 0) instead of deflated for nothing (see [`SAMPLE`]).
//!
//! Compression runs on a dedicated pool: a writer waits for its blocks, so the workers must
//! never be threads that could themselves be waiting on a writer (a shared rayon pool could
//! deadlock when every worker is inside a layer writer).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::OnceLock;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use schema::files::LayerGzip;

/// Input bytes per block.
pub const BLOCK: usize = 128 * 1024;
/// Dictionary carried from one block to the next (deflate's window).
const DICT: usize = 32 * 1024;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("stellaops-gzip-{i}"))
            .build()
            .unwrap_or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool"))
    })
}

/// Deflates one block. Pure: the output depends only on the arguments.
fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    // A fresh state per block: reusing one through `reset` was seen to carry state from one
    // block to the next with the zlib-rs backend, and output then depended on which thread
    // had compressed what before.
    let mut c = Compress::new(Compression::new(level), false);
    {
        if !dict.is_empty() {
            c.set_dictionary(dict).map_err(io::Error::other)?;
        }
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(64 * 1024));
            }
            let before = c.total_in();
            let status = c.compress_vec(&data[consumed..], &mut out, flush).map_err(io::Error::other)?;
            consumed += (c.total_in() - before) as usize;
            let done = match status {
                Status::StreamEnd => true,
                // A sync flush is complete when all input is taken and the output had room.
                Status::Ok | Status::BufError => !last && consumed == data.len() && out.capacity() > out.len(),
            };
            if done {
                return Ok(out);
            }
        }
    }
}

/// libdeflate's level in format 2, chosen by measurement on the bench tree (layer writer CPU
/// time with `perf`, 2 cores): at level 6 deflate is 70% of the writer's time and the writer
/// costs about as much CPU as `umoci insert`; level 4 (greedy parsing) takes a fifth less in
/// all, with output 1.3% larger than libdeflate's level 6 and still 3-4% smaller than umoci's.
/// Levels 2-3 save little more; level 1 is larger than umoci's output.
const V2_LEVEL: i32 = 4;
/// Each member's header in format 2: deflate, no flags, mtime 0, XFL 0, OS 255 (unknown).
const V2_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// libdeflate's level in format 3, measured on the bench tree's mix (text and noise
/// interleaved every 512 bytes, 128 MiB, one core): level 1 218 MB/s for a ratio of 0.596 (larger
/// than umoci's 0.593), level 2 152 MB/s / 0.589, level 3 148 / 0.577, level 4 140 / 0.571.
/// Level 2 is the fastest whose output stays under umoci's.
const V3_LEVEL: i32 = 2;

/// The header libdeflate writes for a stored member (format 3): XFL 4, "fastest".
const V3_STORED_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// Format 3's test for a block not worth deflating: samples of [`SAMPLE`] bytes (the start,
/// the middle and the end of the block; the whole block when it is shorter than three) are
/// deflated at libdeflate's level 1, and when none of them shrinks by more than 1/32 the block
/// is stored. Measured here on 64 MiB: level 4 deflates noise at 105 MB/s for a ratio of 1.000
/// (it stores it in the end) and text at 176 MB/s; storing runs at 2.6 GB/s and the three
/// samples cost under 1% of deflating the block. Pure: it depends on the block only.
const SAMPLE: usize = 4096;

fn incompressible(data: &[u8], sampler: &mut libdeflater::Compressor) -> io::Result<bool> {
    let samples: Vec<&[u8]> = if data.len() < 3 * SAMPLE {
        vec![data]
    } else {
        let mid = data.len() / 2 - SAMPLE / 2;
        vec![&data[..SAMPLE], &data[mid..mid + SAMPLE], &data[data.len() - SAMPLE..]]
    };
    let mut out = vec![0u8; sampler.deflate_compress_bound(SAMPLE.max(data.len().min(3 * SAMPLE)))];
    for sample in samples {
        let n = sampler.deflate_compress(sample, &mut out).map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        if n < sample.len() - sample.len() / 32 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One block as a gzip member of its own (formats 2 and 3). Pure, like [`deflate_block`].
fn member(data: &[u8], format: LayerGzip) -> io::Result<Vec<u8>> {
    /// One compressor per level, per worker: a compressor holds about 1 MiB of tables, and
    /// libdeflate keeps no state between calls (the output depends only on input and level).
    #[derive(Default)]
    struct Compressors {
        by_level: BTreeMap<i32, libdeflater::Compressor>,
    }
    impl Compressors {
        fn at(&mut self, level: i32) -> &mut libdeflater::Compressor {
            self.by_level
                .entry(level)
                .or_insert_with(|| libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).expect("a level libdeflate has")))
        }
    }
    thread_local! {
        static COMPRESSORS: std::cell::RefCell<Compressors> = std::cell::RefCell::new(Compressors::default());
    }
    COMPRESSORS.with(|c| {
        let mut c = c.borrow_mut();
        let stored = format == LayerGzip::V3 && incompressible(data, c.at(1))?;
        let (level, header) = match (format, stored) {
            (_, true) => (0, V3_STORED_HEADER),
            (LayerGzip::V3, false) => (V3_LEVEL, V2_HEADER),
            _ => (V2_LEVEL, V2_HEADER),
        };
        let c = c.at(level);
        let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(data, &mut out).map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        out.truncate(n);
        // The header is part of the format (no name, mtime 0, OS byte unknown): checked, so
        // that a libdeflate that changed it cannot change layer digests unnoticed.
        if out.get(..10) != Some(&header[..]) {
            return Err(io::Error::other(format!("libdeflate wrote the gzip header {:02x?}, not {header:02x?}", out.get(..10))));
        }
        Ok(out)
    })
}

/// A gzip writer that deflates blocks in parallel, deterministically.
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    format: LayerGzip,
    level: u32,
    /// The block being filled.
    buf: Vec<u8>,
    /// The last `DICT` bytes of the previous block.
    dict: Vec<u8>,
    crc: Crc,
    next_seq: u64,
    written_seq: u64,
    tx: mpsc::Sender<(u64, io::Result<Vec<u8>>)>,
    rx: mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    done: BTreeMap<u64, Vec<u8>>,
    max_in_flight: u64,
    header_written: bool,
}

impl<W: Write> std::fmt::Debug for ParallelGzEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzEncoder").field("level", &self.level).field("blocks", &self.next_seq).finish_non_exhaustive()
    }
}

impl<W: Write> ParallelGzEncoder<W> {
    /// A format 1 writer at `level` (see [`ParallelGzEncoder::with_format`]).
    pub fn new(inner: W, level: u32) -> Self {
        Self::with_format(inner, LayerGzip::V1, level)
    }

    /// A writer of `format`; `level` is format 1's zlib level (formats 2 and 3 fix theirs).
    pub fn with_format(inner: W, format: LayerGzip, level: u32) -> Self {
        let (tx, rx) = mpsc::channel();
        let threads = pool().current_num_threads() as u64;
        ParallelGzEncoder {
            inner: Some(inner),
            format,
            level,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: Crc::new(),
            next_seq: 0,
            written_seq: 0,
            tx,
            rx,
            done: BTreeMap::new(),
            // Memory stays bounded: at most this many blocks are compressing or waiting.
            max_in_flight: threads * 2 + 2,
            header_written: false,
        }
    }

    fn sink(&mut self) -> &mut W {
        self.inner.as_mut().expect("used after finish")
    }

    fn write_header(&mut self) -> io::Result<()> {
        // Format 2: every member carries its own header.
        if !self.header_written && !self.format.is_v1() {
            self.header_written = true;
        }
        if !self.header_written {
            // ID1 ID2, CM=deflate, FLG=0, MTIME=0, XFL=0, OS=255 (unknown): no name, no time.
            self.sink().write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        // Every block but the last is BLOCK long (> DICT), so the next dictionary is the tail
        // of this block alone. Formats 2 and 3 use none.
        if self.format.is_v1() {
            self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let tx = self.tx.clone();
        let (level, format) = (self.level, self.format);
        pool().spawn(move || {
            let out = match format {
                LayerGzip::V1 => deflate_block(level, &dict, &data, last),
                LayerGzip::V2 | LayerGzip::V3 => member(&data, format),
            };
            let _ = tx.send((seq, out));
        });
        while self.next_seq - self.written_seq >= self.max_in_flight {
            self.drain_one()?;
        }
        self.write_ready()
    }

    /// Waits for one finished block.
    fn drain_one(&mut self) -> io::Result<()> {
        let (seq, out) = self.rx.recv().map_err(|_| io::Error::other("a compression worker stopped"))?;
        self.done.insert(seq, out?);
        self.write_ready()
    }

    /// Writes finished blocks, in order.
    fn write_ready(&mut self) -> io::Result<()> {
        self.write_header()?;
        while let Some(out) = self.done.remove(&self.written_seq) {
            self.sink().write_all(&out)?;
            self.written_seq += 1;
        }
        Ok(())
    }

    /// Ends the member (last block, CRC32, size) and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        // Format 1 ends with a final deflate block, even an empty one; format 2 writes an empty
        // member only for an empty stream (a gzip stream has at least one member).
        if self.format == LayerGzip::V1 || !self.buf.is_empty() || self.next_seq == 0 {
            self.dispatch(true)?;
        }
        while self.written_seq < self.next_seq {
            self.drain_one()?;
        }
        let mut w = self.inner.take().expect("finish once");
        if self.format == LayerGzip::V1 {
            w.write_all(&self.crc.sum().to_le_bytes())?;
            w.write_all(&self.crc.amount().to_le_bytes())?;
        }
        Ok(w)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.format == LayerGzip::V1 {
            self.crc.update(&data[..n]);
        }
        if self.buf.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        let mut x: u32 = 1;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b"stellaops layer "[i % 16]
                }
            })
            .collect()
    }

    fn gz(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = ParallelGzEncoder::new(Vec::new(), 6);
        for c in data.chunks(chunk.max(1)) {
            e.write_all(c).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn round_trips_and_does_not_depend_on_write_sizes() {
        for n in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 777] {
            let data = sample(n);
            let a = gz(&data, 4096);
            let b = gz(&data, 100_003);
            assert_eq!(a, b, "n={n}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&a[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "n={n}");
        }
    }

    #[test]
    fn the_same_bytes_from_another_pool_size() {
        let data = sample(5 * BLOCK + 3);
        let here = gz(&data, 65536);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        // Blocks are compressed on the module's own pool; the caller's pool must not matter.
        let there = one.install(|| gz(&data, 65536));
        assert_eq!(here, there);
        // And each block is a pure function of its inputs.
        let b1 = deflate_block(6, &data[..DICT], &data[DICT..DICT + BLOCK], false).unwrap();
        let b2 = deflate_block(6, &data[..DICT], &data[DICT..DICT + BLOCK], false).unwrap();
        assert_eq!(b1, b2);
    }

    fn gz2(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = ParallelGzEncoder::with_format(Vec::new(), LayerGzip::V2, 6);
        for c in data.chunks(chunk.max(1)) {
            e.write_all(c).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn format_2_is_one_member_per_block_read_back_whole_and_independent_of_write_sizes_and_pools() {
        for n in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 777] {
            let data = sample(n);
            let a = gz2(&data, 4096);
            assert_eq!(a, gz2(&data, 100_003), "n={n}");
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            assert_eq!(a, one.install(|| gz2(&data, 65536)), "n={n}");
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&a[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "n={n}");
            // One member per block (an empty stream is one empty member), each its own gzip.
            let members = n.div_ceil(BLOCK).max(1);
            let mut rest = &a[..];
            for i in 0..members {
                assert_eq!(&rest[..10], &V2_HEADER[..], "n={n} member {i}");
                let mut d = flate2::bufread::GzDecoder::new(rest);
                let mut one_block = Vec::new();
                d.read_to_end(&mut one_block).unwrap();
                assert_eq!(one_block, data[i * BLOCK..((i + 1) * BLOCK).min(n)], "n={n} member {i}");
                rest = d.into_inner();
            }
            assert!(rest.is_empty(), "n={n}: {} bytes after the last member", rest.len());
        }
        // Format 1 is untouched by the format 2 code: same bytes as a plain `new`.
        let data = sample(2 * BLOCK + 5);
        let mut e = ParallelGzEncoder::with_format(Vec::new(), LayerGzip::V1, 6);
        e.write_all(&data).unwrap();
        assert_eq!(e.finish().unwrap(), gz(&data, 1 << 20));
    }

    #[test]
    fn regression_a_block_does_not_depend_on_what_its_thread_compressed_before() {
        let data = sample(6 * BLOCK + 11);
        let first = gz(&data, 65536);
        // Interleave other streams on the shared pool, then compress the same input again.
        let others: Vec<Vec<u8>> = (0..4).map(|i| sample(3 * BLOCK + i * 1000).into_iter().rev().collect()).collect();
        std::thread::scope(|s| {
            for o in &others {
                s.spawn(move || gz(o, 4096));
            }
        });
        assert_eq!(gz(&data, 65536), first);
    }
}
