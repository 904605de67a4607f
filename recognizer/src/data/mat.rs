//! MATLAB v5 MAT-files (what MATLAB's `save -v6`/`-v7` and scipy's `savemat` write): the subset
//! EMNIST's archive needs, read as a stream. Numeric arrays and structs, each variable possibly
//! zlib-compressed (`miCOMPRESSED`), little-endian (what every
//! current platform writes). Other classes (char, cell, sparse,
//! objects) are read past and kept as their class name, so a file that has them still opens.
//! The `matfile` crate reads numeric arrays only, not structs (docs/decisions.md 12).
//!
//! Sizes in the file are trusted only as far as the bytes behind them: a truncated or corrupt
//! file is an error naming it, never a huge allocation or a panic.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::ZlibDecoder;
use sha2::{Digest, Sha256};

use super::DataError;

/// One variable of a MAT-file.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub value: Array,
}

/// A MATLAB array, dimensions as MATLAB gives them (rows first).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Values in MATLAB's column-major order: element `(r, c)` of an R×C matrix is
    /// `values[c * R + r]`.
    Numeric { dims: Vec<usize>, values: Numeric },
    /// A struct array: `elements[e][f]` is field `fields[f]` of element `e` (column-major).
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        elements: Vec<Vec<Array>>,
    },
    /// A class this reader reads past (char, cell, sparse, object, a complex number).
    Unsupported { class: &'static str },
}

/// Numeric values: bytes as stored when the file stores 8-bit unsigned data (images), else
/// every value as `f64` (exact for every integer class up to 32 bits, and for `single`).
#[derive(Debug, Clone, PartialEq)]
pub enum Numeric {
    U8(Vec<u8>),
    F64(Vec<f64>),
}

impl Numeric {
    pub fn len(&self) -> usize {
        match self {
            Numeric::U8(v) => v.len(),
            Numeric::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<f64> {
        match self {
            Numeric::U8(v) => v.get(i).map(|&b| f64::from(b)),
            Numeric::F64(v) => v.get(i).copied(),
        }
    }
}

impl Array {
    /// Field `name` of a 1×1 struct.
    pub fn field(&self, name: &str) -> Option<&Array> {
        match self {
            Array::Struct {
                fields, elements, ..
            } if elements.len() == 1 => fields
                .iter()
                .position(|f| f == name)
                .map(|i| &elements[0][i]),
            _ => None,
        }
    }

    /// What kind of array this is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Array::Numeric { dims, values } => format!(
                "a {} {} array",
                dims_text(dims),
                match values {
                    Numeric::U8(_) => "8-bit",
                    Numeric::F64(_) => "numeric",
                }
            ),
            Array::Struct { dims, .. } => format!("a {} struct", dims_text(dims)),
            Array::Unsupported { class } => format!("a {class} array"),
        }
    }
}

/// `3×784`.
pub fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("×")
}

/// Every variable of the MAT-file at `path`, with the file's sha256 (computed while reading, so
/// the file is read once).
pub fn read_mat_file(path: &Path) -> Result<(Vec<Variable>, String), DataError> {
    let file = File::open(path).map_err(DataError::io("open", path))?;
    let mut input = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let variables = read_variables(&mut input).map_err(|fault| fault.into_error(path))?;
    // Whatever follows the last variable counts in the hash too.
    io::copy(&mut input, &mut io::sink()).map_err(DataError::io("read", path))?;
    let sha256 = input
        .hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((variables, sha256))
}

/// Every variable of a MAT-file held in memory.
pub fn read_mat_bytes(bytes: &[u8], path: &Path) -> Result<Vec<Variable>, DataError> {
    read_variables(&mut &bytes[..]).map_err(|fault| fault.into_error(path))
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Why a file could not be read: its bytes are wrong, or reading them failed.
enum Fault {
    Format(String),
    Io(io::Error),
}

impl Fault {
    fn into_error(self, path: &Path) -> DataError {
        match self {
            Fault::Format(reason) => DataError::format(path, reason),
            Fault::Io(e) => DataError::io("read", path)(e),
        }
    }
}

type Result<T, E = Fault> = std::result::Result<T, E>;

fn bad<T>(reason: impl Into<String>) -> Result<T> {
    Err(Fault::Format(reason.into()))
}

/// An I/O error while reading `what`: running out of bytes is a truncated file, a zlib error a
/// corrupt one.
fn read_fault(e: io::Error, what: &str) -> Fault {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            Fault::Format(format!("truncated: the file ends inside {what}"))
        }
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            Fault::Format(format!("corrupt compressed data in {what}: {e}"))
        }
        _ => Fault::Io(e),
    }
}

const HEADER: usize = 128;

// Data types (MATLAB's "MAT-File Format", table 1-1).
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

// Array classes (table 1-3).
const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_OBJECT: u8 = 3;
const MX_CHAR: u8 = 4;
const MX_SPARSE: u8 = 5;
const MX_DOUBLE: u8 = 6;
const MX_UINT64: u8 = 15;
const COMPLEX_FLAG: u32 = 0x0800;

fn read_variables(input: &mut dyn Read) -> Result<Vec<Variable>> {
    let mut header = [0u8; HEADER];
    read_exact(input, &mut header, "the 128-byte header")?;
    let text = String::from_utf8_lossy(&header[..116]);
    if text.starts_with("MATLAB 7.3 MAT-file") {
        return bad(
            "a MATLAB 7.3 MAT-file (HDF5), which this reader does not read; save it with -v7",
        );
    }
    if !text.starts_with("MATLAB 5.0 MAT-file") {
        return bad("not a MATLAB v5 MAT-file (its header does not start `MATLAB 5.0 MAT-file`)");
    }
    match &header[126..128] {
        b"IM" => {}
        b"MI" => return bad("a big-endian MAT-file, which this reader does not read"),
        _ => return bad("not a MATLAB v5 MAT-file (no byte-order mark in its header)"),
    }
    let version = u16::from_le_bytes([header[124], header[125]]);
    if version != 0x0100 {
        return bad(format!(
            "MAT-file version {version:#06x}; this reader reads version 0x0100"
        ));
    }
    let mut variables = Vec::new();
    let mut stream = Stream { input };
    while let Some(tag) = stream.top_level_tag()? {
        let what = format!("variable {}", variables.len() + 1);
        match tag.kind {
            MI_COMPRESSED => {
                let mut compressed =
                    ZlibDecoder::new((&mut *stream.input).take(u64::from(tag.len)));
                let mut inner = Stream {
                    input: &mut compressed,
                };
                let mut budget = u64::MAX;
                let tag = inner.tag(&mut budget, &what)?;
                if tag.kind != MI_MATRIX {
                    return bad(format!(
                        "{what}: a compressed element holds data type {}, not an array",
                        tag.kind
                    ));
                }
                variables.push(inner.variable(&tag, &what)?);
                // The rest of the zlib stream (its checksum), then of the element.
                io::copy(&mut compressed, &mut io::sink()).map_err(|e| read_fault(e, &what))?;
                let mut rest = compressed.into_inner();
                io::copy(&mut rest, &mut io::sink()).map_err(|e| read_fault(e, &what))?;
                if rest.limit() > 0 {
                    return Err(read_fault(io::ErrorKind::UnexpectedEof.into(), &what));
                }
            }
            MI_MATRIX => {
                variables.push(stream.variable(&tag, &what)?);
                stream.skip(padding(tag.len), &what)?;
            }
            _ => {
                let mut budget = u64::MAX;
                stream.bytes(&tag, &mut budget, &what)?;
            }
        }
    }
    Ok(variables)
}

/// Bytes that pad an element of `len` bytes to a multiple of 8.
fn padding(len: u32) -> u64 {
    u64::from((8 - len % 8) % 8)
}

fn read_exact(input: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| read_fault(e, what))
}

/// A data element's tag: its type and length, and in the small format (up to 4 bytes) its data.
struct Tag {
    kind: u32,
    len: u32,
    small: Option<[u8; 4]>,
}

/// Reads data elements from a file or a decompressed element, little-endian.
struct Stream<'a> {
    input: &'a mut dyn Read,
}

impl Stream<'_> {
    /// The next tag at the top level of the file, or `None` at its end.
    fn top_level_tag(&mut self) -> Result<Option<Tag>> {
        let mut first = [0u8; 1];
        loop {
            match self.input.read(&mut first) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fault::Io(e)),
            }
        }
        let mut rest = [0u8; 7];
        read_exact(self.input, &mut rest, "a data element's tag")?;
        let mut bytes = [0u8; 8];
        bytes[0] = first[0];
        bytes[1..].copy_from_slice(&rest);
        Ok(Some(Self::parse_tag(bytes)))
    }

    fn parse_tag(b: [u8; 8]) -> Tag {
        let word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if word >> 16 != 0 {
            Tag {
                kind: word & 0xffff,
                len: word >> 16,
                small: Some([b[4], b[5], b[6], b[7]]),
            }
        } else {
            Tag {
                kind: word,
                len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                small: None,
            }
        }
    }

    /// A tag inside an element with `budget` bytes left, which it and its data must fit.
    fn tag(&mut self, budget: &mut u64, what: &str) -> Result<Tag> {
        if *budget < 8 {
            return bad(format!(
                "{what}: an element overruns the array that holds it"
            ));
        }
        let mut b = [0u8; 8];
        read_exact(self.input, &mut b, what)?;
        *budget -= 8;
        let tag = Self::parse_tag(b);
        if tag.small.is_some() {
            if tag.len > 4 {
                return bad(format!(
                    "{what}: a small data element claims {} bytes",
                    tag.len
                ));
            }
        } else {
            let stored = u64::from(tag.len) + padding(tag.len);
            if stored > *budget {
                return bad(format!(
                    "{what}: an element of {} bytes overruns the array that holds it",
                    tag.len
                ));
            }
        }
        Ok(tag)
    }

    /// The data of an element whose tag was just read, padding skipped.
    fn bytes(&mut self, tag: &Tag, budget: &mut u64, what: &str) -> Result<Vec<u8>> {
        if let Some(small) = tag.small {
            return Ok(small[..tag.len as usize].to_vec());
        }
        let len = u64::from(tag.len);
        // Capacity as claimed, but never more than a gigabyte up front: the bytes must arrive.
        let mut data = Vec::with_capacity(len.min(1 << 30) as usize);
        (&mut *self.input)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|e| read_fault(e, what))?;
        if (data.len() as u64) < len {
            return Err(read_fault(io::ErrorKind::UnexpectedEof.into(), what));
        }
        self.skip(padding(tag.len), what)?;
        *budget = budget.saturating_sub(len + padding(tag.len));
        Ok(data)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        let copied = io::copy(&mut (&mut *self.input).take(n), &mut io::sink())
            .map_err(|e| read_fault(e, what))?;
        if copied < n {
            return Err(read_fault(io::ErrorKind::UnexpectedEof.into(), what));
        }
        Ok(())
    }

    /// A named top-level array whose `miMATRIX` tag was just read.
    fn variable(&mut self, tag: &Tag, what: &str) -> Result<Variable> {
        let mut budget = u64::from(tag.len);
        let (name, value) = self.matrix(&mut budget, what)?;
        // Anything the array did not use.
        self.skip(budget, what)?;
        Ok(Variable { name, value })
    }

    /// The inside of an `miMATRIX` element with `budget` bytes: flags, dimensions, name, data.
    fn matrix(&mut self, budget: &mut u64, what: &str) -> Result<(String, Array)> {
        if *budget == 0 {
            // MATLAB writes an empty array (an unset struct field) as an empty element.
            return Ok((
                String::new(),
                Array::Numeric {
                    dims: vec![0, 0],
                    values: Numeric::F64(Vec::new()),
                },
            ));
        }
        let flags = self.subelement(budget, &[MI_UINT32], what, "array flags")?;
        if flags.len() < 8 {
            return bad(format!("{what}: array flags of {} bytes", flags.len()));
        }
        let flags = u32::from_le_bytes([flags[0], flags[1], flags[2], flags[3]]);
        let class = (flags & 0xff) as u8;
        let dims = self.subelement(budget, &[MI_INT32], what, "dimensions")?;
        let dims: Vec<usize> = dims
            .chunks_exact(4)
            .map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i32)
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        if dims.len() < 2 || dims.contains(&usize::MAX) {
            return bad(format!("{what}: dimensions {dims:?}"));
        }
        let name = self.subelement(budget, &[MI_INT8, MI_UINT8], what, "array name")?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let what = if name.is_empty() {
            what.to_owned()
        } else {
            format!("`{name}`")
        };
        let count = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| Fault::Format(format!("{what}: dimensions {dims:?} overflow")))?;
        let value = match class {
            MX_STRUCT => self.structure(dims, count, budget, &what)?,
            MX_DOUBLE..=MX_UINT64 if flags & COMPLEX_FLAG == 0 => {
                let tag = self.tag(budget, &what)?;
                let data = self.bytes(&tag, budget, &what)?;
                let values = numeric(data, tag.kind)
                    .ok_or_else(|| Fault::Format(format!("{what}: data type {}", tag.kind)))?;
                if values.len() != count {
                    return bad(format!(
                        "{what}: {} values for a {} array",
                        values.len(),
                        dims_text(&dims)
                    ));
                }
                Array::Numeric { dims, values }
            }
            _ => {
                let class = match class {
                    MX_CELL => "cell",
                    MX_OBJECT => "object",
                    MX_CHAR => "char",
                    MX_SPARSE => "sparse",
                    MX_DOUBLE..=MX_UINT64 => "complex",
                    _ => "unknown-class",
                };
                self.skip(*budget, &what)?;
                *budget = 0;
                Array::Unsupported { class }
            }
        };
        Ok((name, value))
    }

    fn structure(
        &mut self,
        dims: Vec<usize>,
        count: usize,
        budget: &mut u64,
        what: &str,
    ) -> Result<Array> {
        let width = self.subelement(budget, &[MI_INT32], what, "field name length")?;
        let width = match width[..] {
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) as usize,
            _ => {
                return bad(format!(
                    "{what}: a field name length of {} bytes",
                    width.len()
                ));
            }
        };
        let names = self.subelement(budget, &[MI_INT8, MI_UINT8], what, "field names")?;
        if width == 0 || !names.len().is_multiple_of(width) {
            return bad(format!(
                "{what}: {} bytes of field names, {width} per name",
                names.len()
            ));
        }
        let fields: Vec<String> = names
            .chunks(width)
            .map(|n| {
                let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
                String::from_utf8_lossy(&n[..end]).into_owned()
            })
            .collect();
        let mut elements = Vec::new();
        for _ in 0..count {
            let mut element = Vec::with_capacity(fields.len());
            for field in &fields {
                let inner = format!("{what}.{field}");
                let tag = self.tag(budget, &inner)?;
                if tag.kind != MI_MATRIX || tag.small.is_some() {
                    return bad(format!("{inner}: data type {}, not an array", tag.kind));
                }
                let mut own = u64::from(tag.len);
                *budget -= own + padding(tag.len);
                let (_, value) = self.matrix(&mut own, &inner)?;
                self.skip(own + padding(tag.len), &inner)?;
                element.push(value);
            }
            elements.push(element);
        }
        Ok(Array::Struct {
            dims,
            fields,
            elements,
        })
    }

    /// One sub-element of an array, which must have one of `kinds`.
    fn subelement(
        &mut self,
        budget: &mut u64,
        kinds: &[u32],
        what: &str,
        part: &str,
    ) -> Result<Vec<u8>> {
        let tag = self.tag(budget, what)?;
        if !kinds.contains(&tag.kind) {
            return bad(format!("{what}: its {part} have data type {}", tag.kind));
        }
        self.bytes(&tag, budget, what)
    }
}

/// Values of data type `kind`, or `None` for a type that is not numeric.
fn numeric(data: Vec<u8>, kind: u32) -> Option<Numeric> {
    macro_rules! convert {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            data.chunks_exact(N)
                .map(|c| {
                    let b: [u8; N] = c.try_into().expect("chunks of N");
                    <$t>::from_le_bytes(b) as f64
                })
                .collect()
        }};
    }
    Some(match kind {
        MI_UINT8 => Numeric::U8(data),
        MI_INT8 => Numeric::F64(data.iter().map(|&b| f64::from(b as i8)).collect()),
        MI_INT16 => Numeric::F64(convert!(i16)),
        MI_UINT16 => Numeric::F64(convert!(u16)),
        MI_INT32 => Numeric::F64(convert!(i32)),
        MI_UINT32 => Numeric::F64(convert!(u32)),
        MI_SINGLE => Numeric::F64(convert!(f32)),
        MI_DOUBLE => Numeric::F64(convert!(f64)),
        MI_INT64 => Numeric::F64(convert!(i64)),
        MI_UINT64 => Numeric::F64(convert!(u64)),
        _ => return None,
    })
}

#[cfg(test)]
#[path = "../../../tests/support/mat.rs"]
pub(crate) mod writer;

#[cfg(test)]
mod tests {
    use super::writer::{Class, Value, mat_file};
    use super::*;

    fn numbers(rows: usize, cols: usize, class: Class, data: &[f64]) -> Value {
        Value::Numbers {
            rows,
            cols,
            class,
            data: data.to_vec(),
        }
    }

    fn read(bytes: &[u8]) -> Result<Vec<Variable>, DataError> {
        read_mat_bytes(bytes, Path::new("x.mat"))
    }

    /// What scipy's `loadmat` shows, compressed or not: matrices column-major with their
    /// dimensions, every storage type as its values, nested structs by field, text skipped.
    #[test]
    fn numeric_matrices_and_nested_structs_read_back_compressed_or_not() {
        let nested = Value::Struct(vec![
            (
                "grid".into(),
                numbers(2, 3, Class::Double, &[1.0, 2.0, 3.0, 4.0, 5.5, -6.0]),
            ),
            (
                "inner".into(),
                Value::Struct(vec![
                    (
                        "small".into(),
                        numbers(1, 2, Class::DoubleAsBytes, &[7.0, 250.0]),
                    ),
                    ("wide".into(), numbers(2, 1, Class::Uint16, &[65535.0, 3.0])),
                    (
                        "signed".into(),
                        numbers(1, 3, Class::Int32, &[-5.0, 0.0, 9.0]),
                    ),
                ]),
            ),
            ("note".into(), Value::Text("hello".into())),
            (
                "pixels".into(),
                Value::Bytes {
                    rows: 2,
                    cols: 2,
                    data: vec![10, 20, 30, 40],
                },
            ),
        ]);
        let variables = [
            ("first", nested),
            ("second", numbers(1, 1, Class::Double, &[42.0])),
        ];
        for compressed in [false, true] {
            let read = read(&mat_file(&variables, compressed)).unwrap();
            assert_eq!(
                read.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
                ["first", "second"]
            );
            let first = &read[0].value;
            assert_eq!(
                first.field("grid"),
                Some(&Array::Numeric {
                    dims: vec![2, 3],
                    values: Numeric::F64(vec![1.0, 4.0, 2.0, 5.5, 3.0, -6.0]),
                }),
                "compressed: {compressed}"
            );
            let inner = first.field("inner").unwrap();
            let values = |name: &str| -> Vec<f64> {
                match inner.field(name) {
                    Some(Array::Numeric { values, .. }) => {
                        (0..values.len()).map(|i| values.get(i).unwrap()).collect()
                    }
                    other => panic!("{name}: {other:?}"),
                }
            };
            assert_eq!(values("small"), [7.0, 250.0]);
            assert_eq!(values("wide"), [65535.0, 3.0]);
            assert_eq!(values("signed"), [-5.0, 0.0, 9.0]);
            assert_eq!(
                first.field("note"),
                Some(&Array::Unsupported { class: "char" })
            );
            assert_eq!(
                first.field("pixels"),
                Some(&Array::Numeric {
                    dims: vec![2, 2],
                    values: Numeric::U8(vec![10, 30, 20, 40]),
                })
            );
            assert_eq!(
                read[1].value,
                Array::Numeric {
                    dims: vec![1, 1],
                    values: Numeric::F64(vec![42.0]),
                }
            );
        }
    }

    #[test]
    fn the_file_is_hashed_as_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mat");
        let bytes = mat_file(&[("v", numbers(1, 1, Class::Double, &[1.0]))], true);
        std::fs::write(&path, &bytes).unwrap();
        let (variables, sha256) = read_mat_file(&path).unwrap();
        assert_eq!(variables.len(), 1);
        assert_eq!(sha256, crate::data::download::sha256_bytes(&bytes));
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let good = |compressed| {
            mat_file(
                &[(
                    "v",
                    Value::Struct(vec![("m".into(), numbers(4, 4, Class::Double, &[0.5; 16]))]),
                )],
                compressed,
            )
        };
        let mut v73 = good(false);
        v73[..19].copy_from_slice(b"MATLAB 7.3 MAT-file");
        let mut big_endian = good(false);
        big_endian[126..128].copy_from_slice(b"MI");
        // After the header and the element's tag: zlib's own header, and its checksum.
        let mut bad_header = good(true);
        bad_header[136] ^= 0xff;
        let mut bad_checksum = good(true);
        *bad_checksum.last_mut().unwrap() ^= 1;
        let mut overrun = good(false);
        // The struct's field claims more bytes than the struct holds.
        let at = overrun
            .windows(8)
            .rposition(|w| w[..4] == 14u32.to_le_bytes())
            .unwrap();
        overrun[at + 4..at + 8].copy_from_slice(&4096u32.to_le_bytes());
        let cases: [(&str, Vec<u8>, &str); 8] = [
            ("text", b"name,value\n1,2\n".to_vec(), "truncated"),
            (
                "not a MAT-file",
                [b'x'; 200].to_vec(),
                "not a MATLAB v5 MAT-file",
            ),
            ("v7.3", v73, "MATLAB 7.3 MAT-file (HDF5)"),
            ("big-endian", big_endian, "big-endian"),
            ("truncated", good(false)[..200].to_vec(), "truncated"),
            ("zlib header", bad_header, "corrupt compressed data"),
            ("zlib checksum", bad_checksum, "corrupt compressed data"),
            ("overrun", overrun, "overruns the array that holds it"),
        ];
        for (what, bytes, expected) in cases {
            let error = read(&bytes).expect_err(what).to_string();
            assert!(
                error.starts_with("x.mat: ") && error.contains(expected),
                "{what}: {error}"
            );
        }
        let compressed = good(true);
        for cut in [130, compressed.len() / 2, compressed.len() - 1] {
            let error = read(&compressed[..cut]).unwrap_err().to_string();
            assert!(error.contains("truncated"), "cut at {cut}: {error}");
        }
    }
}
