//! The on-disk dataset format: append-only shard files of length-prefixed samples, read as a
//! stream so training never holds a dataset in memory.
//!
//! A shard starts with [`MAGIC`]; each sample is `u32 body length` then the body:
//! `u16 label length, label (UTF-8), u8 style length, style (UTF-8), u16 width, u16 height,
//! u16 box count, 4 × u16 per box (x0, y0, x1, y1), width × height pixel bytes`, little-endian.
//! Shards are written under a temporary name and renamed when complete, so a crash or a full
//! disk never leaves a half shard under a name the manifest could list.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DataError;
use super::split::Split;

pub const MAGIC: &[u8; 8] = b"TXRSHRD1";

/// One image with its ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The text (a character, a line, or a page's lines joined by `\n`).
    pub label: String,
    /// Who wrote it: the font's name, or `mnist`.
    pub style: String,
    pub width: u16,
    pub height: u16,
    /// Line boxes for pages, `[x0, y0, x1, y1)`; empty otherwise.
    pub boxes: Vec<[u16; 4]>,
    pub pixels: Vec<u8>,
}

impl Sample {
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(self.label.len() as u16).to_le_bytes());
        out.extend_from_slice(self.label.as_bytes());
        out.push(self.style.len() as u8);
        out.extend_from_slice(self.style.as_bytes());
        out.extend_from_slice(&self.width.to_le_bytes());
        out.extend_from_slice(&self.height.to_le_bytes());
        out.extend_from_slice(&(self.boxes.len() as u16).to_le_bytes());
        for b in &self.boxes {
            for v in b {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.pixels);
        let body = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&body.to_le_bytes());
    }

    fn decode(body: &[u8]) -> Option<Sample> {
        let mut at = 0;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = body.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let u16_at = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
        let label_len = u16_at(take(2)?) as usize;
        let label = String::from_utf8(take(label_len)?.to_vec()).ok()?;
        let style_len = take(1)?[0] as usize;
        let style = String::from_utf8(take(style_len)?.to_vec()).ok()?;
        let width = u16_at(take(2)?);
        let height = u16_at(take(2)?);
        let n_boxes = u16_at(take(2)?) as usize;
        let mut boxes = Vec::with_capacity(n_boxes);
        for _ in 0..n_boxes {
            let b = take(8)?;
            boxes.push([
                u16_at(&b[0..]),
                u16_at(&b[2..]),
                u16_at(&b[4..]),
                u16_at(&b[6..]),
            ]);
        }
        let pixels = take(width as usize * height as usize)?.to_vec();
        (at == body.len()).then_some(Sample {
            label,
            style,
            width,
            height,
            boxes,
            pixels,
        })
    }
}

/// A finished shard as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub count: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes one split's samples into shards of at most `max_bytes` each.
pub struct ShardWriter<W: Write = BufWriter<File>> {
    dir: PathBuf,
    split: Split,
    max_bytes: u64,
    open: Option<OpenShard<W>>,
    done: Vec<ShardInfo>,
    buf: Vec<u8>,
    create: fn(&Path) -> io::Result<W>,
}

impl<W: Write> std::fmt::Debug for ShardWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("dir", &self.dir)
            .field("split", &self.split)
            .field("done", &self.done.len())
            .finish_non_exhaustive()
    }
}

struct OpenShard<W> {
    tmp: PathBuf,
    file: String,
    out: W,
    count: u64,
    bytes: u64,
    hasher: Sha256,
}

fn create_file(path: &Path) -> io::Result<BufWriter<File>> {
    File::create(path).map(|f| BufWriter::with_capacity(1 << 20, f))
}

impl ShardWriter {
    pub fn new(dir: &Path, split: Split, max_bytes: u64) -> ShardWriter {
        ShardWriter::with_sink(dir, split, max_bytes, create_file)
    }
}

impl<W: Write> ShardWriter<W> {
    /// A writer whose shard files are opened by `create` (tests inject failing sinks).
    pub fn with_sink(
        dir: &Path,
        split: Split,
        max_bytes: u64,
        create: fn(&Path) -> io::Result<W>,
    ) -> ShardWriter<W> {
        ShardWriter {
            dir: dir.to_owned(),
            split,
            max_bytes: max_bytes.max(1),
            open: None,
            done: Vec::new(),
            buf: Vec::new(),
            create,
        }
    }

    pub fn push(&mut self, sample: &Sample) -> Result<(), DataError> {
        sample.encode(&mut self.buf);
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.bytes + self.buf.len() as u64 > self.max_bytes && o.count > 0)
        {
            self.close_current()?;
        }
        if self.open.is_none() {
            let file = format!("{}-{:05}.shard", self.split.name(), self.done.len());
            let tmp = self.dir.join(format!(".{file}.tmp"));
            let mut out = (self.create)(&tmp).map_err(DataError::io("create", &tmp))?;
            out.write_all(MAGIC).map_err(DataError::io("write", &tmp))?;
            let mut hasher = Sha256::new();
            hasher.update(MAGIC);
            self.open = Some(OpenShard {
                tmp,
                file,
                out,
                count: 0,
                bytes: MAGIC.len() as u64,
                hasher,
            });
        }
        let open = self.open.as_mut().expect("opened above");
        if let Err(e) = open.out.write_all(&self.buf) {
            let tmp = open.tmp.clone();
            self.abandon();
            return Err(DataError::io("write", tmp)(e));
        }
        open.hasher.update(&self.buf);
        open.count += 1;
        open.bytes += self.buf.len() as u64;
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), DataError> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        if let Err(e) = open.out.flush() {
            let _ = fs::remove_file(&open.tmp);
            return Err(DataError::io("write", &open.tmp)(e));
        }
        drop(open.out);
        let target = self.dir.join(&open.file);
        fs::rename(&open.tmp, &target).map_err(DataError::io("rename into", &target))?;
        self.done.push(ShardInfo {
            file: open.file,
            count: open.count,
            bytes: open.bytes,
            sha256: open
                .hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        });
        Ok(())
    }

    fn abandon(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open.out);
            let _ = fs::remove_file(&open.tmp);
        }
    }

    /// Closes the last shard and returns every shard written, in order.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>, DataError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.done))
    }
}

impl<W: Write> Drop for ShardWriter<W> {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Streams the samples of one shard file.
#[derive(Debug)]
pub struct ShardReader {
    path: PathBuf,
    input: BufReader<File>,
    buf: Vec<u8>,
}

impl ShardReader {
    pub fn open(path: &Path) -> Result<ShardReader, DataError> {
        let file = File::open(path).map_err(DataError::io("open", path))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| DataError::format(path, "too short to be a shard"))?;
        if &magic != MAGIC {
            return Err(DataError::format(path, "not a textrec shard (bad magic)"));
        }
        Ok(ShardReader {
            path: path.to_owned(),
            input,
            buf: Vec::new(),
        })
    }
}

impl Iterator for ShardReader {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(DataError::io("read", &self.path)(e))),
        }
        let len = u32::from_le_bytes(len) as usize;
        self.buf.resize(len, 0);
        if self.input.read_exact(&mut self.buf).is_err() {
            return Some(Err(DataError::format(&self.path, "truncated sample")));
        }
        Some(
            Sample::decode(&self.buf)
                .ok_or_else(|| DataError::format(&self.path, "malformed sample")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8) -> Sample {
        Sample {
            label: format!("line {i}"),
            style: "fonts-x/X".into(),
            width: 3,
            height: 2,
            boxes: vec![[0, 1, 2, 3]],
            pixels: vec![i; 6],
        }
    }

    #[test]
    fn samples_round_trip_across_shard_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ShardWriter::new(dir.path(), Split::Val, 100);
        for i in 0..10 {
            writer.push(&sample(i)).unwrap();
        }
        let shards = writer.finish().unwrap();
        assert!(shards.len() > 1, "{shards:?}");
        assert_eq!(shards.iter().map(|s| s.count).sum::<u64>(), 10);
        let read: Vec<Sample> = shards
            .iter()
            .flat_map(|s| ShardReader::open(&dir.path().join(&s.file)).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, (0..10).map(sample).collect::<Vec<_>>());
        for s in &shards {
            let bytes = fs::read(dir.path().join(&s.file)).unwrap();
            assert_eq!(bytes.len() as u64, s.bytes);
        }
    }

    /// A sink that fails like a full disk after a few hundred bytes.
    struct FullDisk(usize);
    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 + buf.len() > 300 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_an_error_and_leaves_no_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ShardWriter::with_sink(dir.path(), Split::Train, 1 << 20, |p| {
            File::create(p)?;
            Ok(FullDisk(0))
        });
        let err = (0..100)
            .try_for_each(|i| writer.push(&sample(i)))
            .unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        drop(writer);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_truncated_shard_is_reported_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ShardWriter::new(dir.path(), Split::Test, 1 << 20);
        writer.push(&sample(1)).unwrap();
        let shards = writer.finish().unwrap();
        let path = dir.path().join(&shards[0].file);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = ShardReader::open(&path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
