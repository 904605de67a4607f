//! Reading a page image the way a user hands it over: PNG, JPEG or TIFF; gray, RGB or RGBA,
//! 8 or 16 bits; EXIF orientation applied; transparency over white paper. The size is checked
//! from the header before anything is decoded, so a decompression bomb costs nothing. A multi-page
//! TIFF (a scanned document) is a sequence of pages, decoded one at a time.

use std::io::{BufRead, Cursor, Seek};

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageBuffer, ImageDecoder, ImageReader, Limits};
use tiff::decoder::{Decoder as TiffDecoder, DecodingResult};
use tiff::tags::Tag;

/// Why an input is not a page we can read.
#[derive(Debug, thiserror::Error)]
pub enum PageImageError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("the file is empty")]
    Empty,
    #[error("not an image textrec reads (PNG, JPEG, TIFF)")]
    UnknownFormat,
    #[error("{width}×{height} is {pixels} pixels, over the limit of {limit} (raise --max-pixels)")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("the image has no pixels ({width}×{height})")]
    NoPixels { width: u32, height: u32 },
    #[error("corrupt or truncated image: {0}")]
    Decode(String),
    #[error("page {page}: {source}")]
    Page {
        /// 1-based, as a viewer numbers them.
        page: usize,
        #[source]
        source: Box<PageImageError>,
    },
}

/// The pages of an image file, in order: one for PNG and JPEG, every page of a TIFF. Pages are
/// decoded as the iterator is advanced, so a long scan costs one page of memory, and
/// `--max-pixels` applies to each page.
#[derive(Debug)]
pub struct PageImages<'a> {
    pages: Pages<'a>,
}

enum Pages<'a> {
    One(Option<Result<GrayImage, PageImageError>>),
    Tiff {
        decoder: Box<TiffDecoder<Cursor<&'a [u8]>>>,
        next: usize,
        max_pixels: u64,
        finished: bool,
    },
}

impl std::fmt::Debug for Pages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pages::One(_) => f.write_str("One"),
            Pages::Tiff { next, .. } => write!(f, "Tiff {{ next: {next} }}"),
        }
    }
}

impl PageImages<'_> {
    /// Whether this is a multi-page document (so a page is named by its number in errors).
    pub fn is_multi_page(&self) -> bool {
        matches!(self.pages, Pages::Tiff { .. })
    }
}

impl Iterator for PageImages<'_> {
    type Item = Result<GrayImage, PageImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.pages {
            Pages::One(page) => page.take(),
            Pages::Tiff {
                decoder,
                next,
                max_pixels,
                finished,
            } => {
                if *finished {
                    return None;
                }
                let page = *next + 1;
                let advanced = if *next == 0 {
                    Ok(())
                } else {
                    decoder.next_image().map_err(tiff_error)
                };
                let result = advanced.and_then(|()| decode_tiff_page(decoder, *max_pixels));
                *next += 1;
                *finished = result.is_err() || !decoder.more_images();
                Some(result.map_err(|source| PageImageError::Page {
                    page,
                    source: Box::new(source),
                }))
            }
        }
    }
}

/// Every page of the image in `bytes` (see [`PageImages`]).
pub fn decode_pages(bytes: &[u8], max_pixels: u64) -> Result<PageImages<'_>, PageImageError> {
    let is_tiff = bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*");
    if is_tiff
        && let Ok(decoder) = TiffDecoder::new(Cursor::new(bytes))
        && decoder.more_images()
    {
        return Ok(PageImages {
            pages: Pages::Tiff {
                decoder: Box::new(decoder.with_limits(tiff_limits(max_pixels))),
                next: 0,
                max_pixels,
                finished: false,
            },
        });
    }
    // One page: the image crate's decoders, with all their format coverage.
    Ok(PageImages {
        pages: Pages::One(Some(decode_page(bytes, max_pixels))),
    })
}

fn tiff_limits(max_pixels: u64) -> tiff::decoder::Limits {
    let bytes = usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX);
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = bytes;
    limits.intermediate_buffer_size = bytes;
    limits.ifd_value_size = bytes;
    limits
}

fn tiff_error(e: tiff::TiffError) -> PageImageError {
    match e {
        tiff::TiffError::UnsupportedError(what) => {
            PageImageError::Decode(format!("unsupported TIFF: {what}"))
        }
        other => PageImageError::Decode(other.to_string()),
    }
}

/// The decoder's current page, as [`decode_page`] would read it.
fn decode_tiff_page<R: std::io::Read + Seek>(
    decoder: &mut TiffDecoder<R>,
    max_pixels: u64,
) -> Result<GrayImage, PageImageError> {
    let (width, height) = decoder.dimensions().map_err(tiff_error)?;
    check_size(width, height, max_pixels)?;
    let color = decoder.colortype().map_err(tiff_error)?;
    let orientation = decoder
        .find_tag(Tag::Orientation)
        .ok()
        .flatten()
        .and_then(|v| v.into_u16().ok())
        .and_then(|v| Orientation::from_exif(v.min(255) as u8))
        .unwrap_or(Orientation::NoTransforms);
    let data = decoder.read_image().map_err(tiff_error)?;
    use tiff::ColorType as C;
    let image = match (color, data) {
        (C::Gray(1), DecodingResult::U8(packed)) => {
            unpack_bilevel(&packed, width, height).map(DynamicImage::ImageLuma8)
        }
        (C::Gray(8), DecodingResult::U8(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageLuma8)
        }
        (C::Gray(16), DecodingResult::U16(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageLuma16)
        }
        (C::GrayA(8), DecodingResult::U8(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageLumaA8)
        }
        (C::GrayA(16), DecodingResult::U16(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageLumaA16)
        }
        (C::RGB(8), DecodingResult::U8(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageRgb8)
        }
        (C::RGB(16), DecodingResult::U16(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageRgb16)
        }
        (C::RGBA(8), DecodingResult::U8(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageRgba8)
        }
        (C::RGBA(16), DecodingResult::U16(v)) => {
            ImageBuffer::from_raw(width, height, v).map(DynamicImage::ImageRgba16)
        }
        (color, _) => {
            return Err(PageImageError::Decode(format!(
                "unsupported TIFF colour type {color:?}"
            )));
        }
    };
    let mut image = image.ok_or_else(|| {
        PageImageError::Decode("the pixel data does not match the page size".into())
    })?;
    image.apply_orientation(orientation);
    Ok(to_gray_on_white(&image))
}

/// 1-bit rows, each padded to a whole byte, 1 = white (the decoder has already applied
/// WhiteIsZero).
fn unpack_bilevel(packed: &[u8], width: u32, height: u32) -> Option<GrayImage> {
    let stride = (width as usize).div_ceil(8);
    if packed.len() < stride * height as usize {
        return None;
    }
    Some(GrayImage::from_fn(width, height, |x, y| {
        let byte = packed[y as usize * stride + x as usize / 8];
        let bit = (byte >> (7 - x % 8)) & 1;
        image::Luma([if bit == 1 { 255 } else { 0 }])
    }))
}

fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), PageImageError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(PageImageError::NoPixels { width, height });
    }
    if pixels > max_pixels {
        return Err(PageImageError::TooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// Decodes a page as 8-bit gray (0 = black ink, 255 = white paper) from its encoded bytes (an
/// upload, a file's contents); of a multi-page TIFF, the first page (see [`decode_pages`]).
pub fn decode_page(bytes: &[u8], max_pixels: u64) -> Result<GrayImage, PageImageError> {
    if bytes.is_empty() {
        return Err(PageImageError::Empty);
    }
    decode(ImageReader::new(Cursor::new(bytes)), max_pixels)
}

fn decode<R: BufRead + Seek>(
    reader: ImageReader<R>,
    max_pixels: u64,
) -> Result<GrayImage, PageImageError> {
    let mut reader = reader.with_guessed_format()?;
    if reader.format().is_none() {
        return Err(PageImageError::UnknownFormat);
    }
    let mut limits = Limits::default();
    // 16-bit RGBA is the widest pixel: 8 bytes, plus room for the converted copies.
    limits.max_alloc = Some(max_pixels.saturating_mul(8 + 4).max(1 << 20));
    reader.limits(limits);
    let decode_error = |e: image::ImageError| match e {
        image::ImageError::Unsupported(_) => PageImageError::UnknownFormat,
        image::ImageError::IoError(io) => PageImageError::Decode(io.to_string()),
        other => PageImageError::Decode(other.to_string()),
    };
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels)?;
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(to_gray_on_white(&image))
}

/// Luma, with transparent pixels laid over white paper (a PNG with a transparent background
/// would otherwise read as black).
fn to_gray_on_white(image: &DynamicImage) -> GrayImage {
    if !image.color().has_alpha() {
        return image.to_luma8();
    }
    let with_alpha = image.to_luma_alpha8();
    GrayImage::from_fn(with_alpha.width(), with_alpha.height(), |x, y| {
        let [luma, alpha] = with_alpha.get_pixel(x, y).0;
        let (luma, alpha) = (u32::from(luma), u32::from(alpha));
        image::Luma([((luma * alpha + 255 * (255 - alpha) + 127) / 255) as u8])
    })
}

/// The page's paper and ink gray levels (high and low percentiles), so a faint pencil page and
/// a black-marker page both reach the recognizer as full-strength ink on empty paper.
pub(super) fn paper_and_ink(page: &GrayImage) -> (u8, u8) {
    let mut histogram = [0u64; 256];
    for p in page.pixels() {
        histogram[p.0[0] as usize] += 1;
    }
    let total: u64 = histogram.iter().sum();
    let percentile = |fraction: f64| {
        let target = (total as f64 * fraction) as u64;
        let mut seen = 0;
        for (level, &count) in histogram.iter().enumerate() {
            seen += count;
            if seen > target {
                return level as u8;
            }
        }
        255
    };
    let (paper, ink) = (percentile(0.9), percentile(0.005));
    // A blank page: no contrast to stretch.
    (paper, ink.min(paper.saturating_sub(32)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, LumaA, Rgb, RgbaImage};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn every_format_and_pixel_type_reads_as_dark_ink_on_white() {
        let gray = GrayImage::from_fn(8, 4, |x, _| Luma([if x < 4 { 0 } else { 255 }]));
        let rgb = image::RgbImage::from_fn(8, 4, |x, _| Rgb([if x < 4 { 0 } else { 255 }; 3]));
        let wide = image::ImageBuffer::<Luma<u16>, _>::from_fn(8, 4, |x, _| {
            Luma([if x < 4 { 0 } else { 65535 }])
        });
        let inputs = [
            encode(DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png),
            encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg),
            encode(DynamicImage::ImageRgb8(rgb), ImageFormat::Tiff),
            encode(DynamicImage::ImageLuma16(wide), ImageFormat::Png),
        ];
        for bytes in inputs {
            let page = decode_page(&bytes, 1 << 20).unwrap();
            assert_eq!(page.dimensions(), (8, 4));
            assert!(page.get_pixel(1, 1).0[0] < 40, "ink stays dark");
            assert!(page.get_pixel(6, 1).0[0] > 215, "paper stays light");
        }
    }

    #[test]
    fn transparent_background_is_white_paper() {
        let rgba = RgbaImage::from_fn(4, 4, |x, _| {
            if x == 0 {
                image::Rgba([0, 0, 0, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        let page = decode_page(
            &encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            1 << 20,
        )
        .unwrap();
        assert_eq!(page.get_pixel(0, 0).0[0], 0);
        assert_eq!(page.get_pixel(3, 0).0[0], 255);
        let half = image::ImageBuffer::<LumaA<u8>, _>::from_pixel(2, 2, LumaA([0, 128]));
        let page = decode_page(
            &encode(DynamicImage::ImageLumaA8(half), ImageFormat::Png),
            1 << 20,
        )
        .unwrap();
        assert_eq!(page.get_pixel(0, 0).0[0], 127);
    }

    #[test]
    fn bad_inputs_are_errors_that_say_what_is_wrong() {
        assert!(matches!(decode_page(&[], 100), Err(PageImageError::Empty)));
        assert!(matches!(
            decode_page(b"hello, this is text", 100),
            Err(PageImageError::UnknownFormat)
        ));
        let png = encode(
            DynamicImage::ImageLuma8(GrayImage::new(64, 64)),
            ImageFormat::Png,
        );
        assert!(matches!(
            decode_page(&png[..png.len() / 2], 1 << 20),
            Err(PageImageError::Decode(_))
        ));
        match decode_page(&png, 1000) {
            Err(PageImageError::TooLarge { pixels, limit, .. }) => {
                assert_eq!((pixels, limit), (4096, 1000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A 60000×60000 PNG header (3.6 gigapixels) over a few bytes of data.
        let mut png = encode(
            DynamicImage::ImageLuma8(GrayImage::new(1, 1)),
            ImageFormat::Png,
        );
        png[16..20].copy_from_slice(&60000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_page(&png, 50_000_000),
            Err(PageImageError::TooLarge { .. })
        ));
    }

    /// A TIFF with one page per image, each written as the tiff crate's encoder writes it.
    fn multi_page_tiff(pages: &[DynamicImage]) -> Vec<u8> {
        use tiff::encoder::{TiffEncoder, colortype};
        let mut bytes = Cursor::new(Vec::new());
        let mut encoder = TiffEncoder::new(&mut bytes).unwrap();
        for page in pages {
            let (w, h) = (page.width(), page.height());
            match page {
                DynamicImage::ImageLuma8(p) => encoder.write_image::<colortype::Gray8>(w, h, p),
                DynamicImage::ImageLuma16(p) => encoder.write_image::<colortype::Gray16>(w, h, p),
                DynamicImage::ImageRgb8(p) => encoder.write_image::<colortype::RGB8>(w, h, p),
                DynamicImage::ImageRgba8(p) => encoder.write_image::<colortype::RGBA8>(w, h, p),
                other => panic!("no encoder for {:?}", other.color()),
            }
            .unwrap();
        }
        bytes.into_inner()
    }

    /// Left half ink, right half paper.
    fn half_inked(width: u32, height: u32) -> GrayImage {
        GrayImage::from_fn(width, height, |x, _| {
            Luma([if x < width / 2 { 0 } else { 255 }])
        })
    }

    #[test]
    fn every_page_of_a_multi_page_tiff_is_read_in_order() {
        let wide = image::ImageBuffer::<Luma<u16>, _>::from_fn(10, 3, |x, _| {
            Luma([if x < 5 { 0 } else { 65535 }])
        });
        let tiff = multi_page_tiff(&[
            DynamicImage::ImageLuma8(half_inked(8, 4)),
            DynamicImage::ImageRgb8(DynamicImage::ImageLuma8(half_inked(6, 5)).to_rgb8()),
            DynamicImage::ImageLuma16(wide),
            DynamicImage::ImageRgba8(DynamicImage::ImageLuma8(half_inked(4, 2)).to_rgba8()),
        ]);
        let pages: Vec<GrayImage> = decode_pages(&tiff, 1 << 20)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let sizes: Vec<_> = pages.iter().map(|p| p.dimensions()).collect();
        assert_eq!(sizes, [(8, 4), (6, 5), (10, 3), (4, 2)]);
        for page in &pages {
            assert_eq!(page.get_pixel(0, 1).0[0], 0, "ink stays dark");
            assert_eq!(
                page.get_pixel(page.width() - 1, 1).0[0],
                255,
                "paper stays light"
            );
        }
        // `decode_page` (the HTTP API) takes the first page.
        assert_eq!(decode_page(&tiff, 1 << 20).unwrap(), pages[0]);
    }

    #[test]
    fn one_page_files_are_one_page_and_a_bad_page_is_named() {
        let png = encode(DynamicImage::ImageLuma8(half_inked(8, 4)), ImageFormat::Png);
        assert_eq!(decode_pages(&png, 1 << 20).unwrap().count(), 1);
        let single = multi_page_tiff(&[DynamicImage::ImageLuma8(half_inked(8, 4))]);
        assert_eq!(decode_pages(&single, 1 << 20).unwrap().count(), 1);

        let tiff = multi_page_tiff(&[
            DynamicImage::ImageLuma8(half_inked(8, 4)),
            DynamicImage::ImageLuma8(half_inked(100, 100)),
            DynamicImage::ImageLuma8(half_inked(8, 4)),
        ]);
        let pages: Vec<_> = decode_pages(&tiff, 1000).unwrap().collect();
        assert!(pages[0].is_ok());
        match &pages[1] {
            Err(e @ PageImageError::Page { page: 2, source }) => {
                assert!(matches!(
                    **source,
                    PageImageError::TooLarge { pixels: 10_000, .. }
                ));
                assert!(e.to_string().starts_with("page 2: 100×100"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pages.len(), 2, "reading stops at the bad page");

        let mut truncated = tiff.clone();
        truncated.truncate(tiff.len() - 40);
        let read: Vec<_> = decode_pages(&truncated, 1 << 20).unwrap().collect();
        assert!(read.iter().any(|page| page.is_err()), "{read:?}");
    }

    #[test]
    fn bilevel_white_is_zero_pages_read_as_ink_on_paper() {
        // Two 1-bit pages as a fax scanner writes them (uncompressed here): 0 = white.
        // Row 0: the first 4 pixels black; row 1: all white. Width 10 pads each row to 2 bytes.
        let rows: [u8; 4] = [0b1111_0000, 0b0000_0000, 0, 0];
        let mut tiff = b"II*\0".to_vec();
        let first_ifd = 8 + 2 * rows.len() as u32;
        tiff.extend(first_ifd.to_le_bytes());
        let data_at = [8u32, 8 + rows.len() as u32];
        tiff.extend(rows);
        tiff.extend(rows);
        let entries = 8u16;
        let ifd_len = 2 + 12 * u32::from(entries) + 4;
        for (page, data) in data_at.into_iter().enumerate() {
            let next = if page == 0 { first_ifd + ifd_len } else { 0 };
            tiff.extend(entries.to_le_bytes());
            for (tag, kind, value) in [
                (256u16, 3u16, 10u32),       // ImageWidth
                (257, 3, 2),                 // ImageLength
                (258, 3, 1),                 // BitsPerSample
                (259, 3, 1),                 // Compression: none
                (262, 3, 0),                 // PhotometricInterpretation: WhiteIsZero
                (273, 4, data),              // StripOffsets
                (278, 3, 2),                 // RowsPerStrip
                (279, 4, rows.len() as u32), // StripByteCounts
            ] {
                tiff.extend(tag.to_le_bytes());
                tiff.extend(kind.to_le_bytes());
                tiff.extend(1u32.to_le_bytes());
                let mut value_field = [0u8; 4];
                if kind == 3 {
                    value_field[..2].copy_from_slice(&(value as u16).to_le_bytes());
                } else {
                    value_field.copy_from_slice(&value.to_le_bytes());
                }
                tiff.extend(value_field);
            }
            tiff.extend(next.to_le_bytes());
        }
        let pages: Vec<GrayImage> = decode_pages(&tiff, 1 << 20)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pages.len(), 2);
        for page in pages {
            assert_eq!(page.dimensions(), (10, 2));
            let row: Vec<u8> = (0..10).map(|x| page.get_pixel(x, 0).0[0]).collect();
            assert_eq!(row, [0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
            assert!((0..10).all(|x| page.get_pixel(x, 1).0[0] == 255));
        }
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
