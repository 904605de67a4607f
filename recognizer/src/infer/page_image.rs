//! Reading a page image the way a user hands it over: PNG, JPEG or TIFF; gray, RGB or RGBA,
//! 8 or 16 bits; EXIF orientation applied; transparency over white paper. The size is checked
//! from the header before anything is decoded, so a decompression bomb costs nothing.

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, Limits};

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
}

/// Reads the page at `path` as 8-bit gray (0 = black ink, 255 = white paper).
pub fn read_page(path: &Path, max_pixels: u64) -> Result<GrayImage, PageImageError> {
    let bytes = std::fs::read(path)?;
    decode_page(&bytes, max_pixels)
}

/// Decodes a page from its encoded bytes (an upload, a file's contents).
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
