//! The 1,797 UCI optical-recognition digits (8×8 blocks of 0–16 ink counts, smartcore's copy,
//! Apache-2.0): real handwriting by writers no textrec dataset contains, so a character model
//! scored on them gets a second, independent number. Each digit is laid out as MNIST's are: the
//! ink's bounding box scaled (bilinear) so its longer side is 20 px, centred in 28×28, white ink
//! on black.

use super::Sample;
use super::raster::Ink;

/// MNIST's digit box inside the 28×28 image.
const BOX: f32 = 20.0;
const SIDE: usize = 28;

/// Every UCI digit as a 28×28 `chars` sample labelled `0`–`9`, in the dataset's order.
pub fn uci_digits() -> Vec<Sample> {
    let dataset = smartcore::dataset::digits::load_dataset();
    let side = (dataset.num_features as f64).sqrt() as usize;
    dataset
        .data
        .chunks_exact(dataset.num_features)
        .zip(&dataset.target)
        .map(|(counts, &digit)| {
            let pixels: Vec<u8> = counts
                .iter()
                .map(|&c| (c / 16.0 * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            Sample {
                label: char::from(b'0' + digit as u8).to_string(),
                style: "uci-digits".into(),
                width: SIDE as u16,
                height: SIDE as u16,
                boxes: Vec::new(),
                pixels: mnist_layout(&Ink::from_u8(side, side, &pixels)).to_u8(),
            }
        })
        .collect()
}

fn mnist_layout(digit: &Ink) -> Ink {
    let mut canvas = Ink::new(SIDE, SIDE);
    let Some((x0, y0, x1, y1)) = digit.ink_bounds(0.0) else {
        return canvas;
    };
    let (w, h) = ((x1 - x0) as f32, (y1 - y0) as f32);
    let scale = BOX / w.max(h);
    let (sw, sh) = (
        ((w * scale).round() as usize).max(1),
        ((h * scale).round() as usize).max(1),
    );
    let scaled = digit.crop(x0, y0, x1, y1).resize(sw, sh);
    canvas.paste_max(
        &scaled,
        ((SIDE - sw) / 2) as isize,
        ((SIDE - sh) / 2) as isize,
    );
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_1797_digits_load_centred_in_mnist_layout() {
        let digits = uci_digits();
        assert_eq!(digits.len(), 1797);
        let mut per_class = [0usize; 10];
        for d in &digits {
            per_class[d.label.parse::<usize>().unwrap()] += 1;
            assert_eq!(d.pixels.len(), SIDE * SIDE);
            let ink = Ink::from_u8(SIDE, SIDE, &d.pixels);
            let (x0, y0, x1, y1) = ink.ink_bounds(0.0).expect("every digit has ink");
            assert_eq!(
                (x1 - x0).max(y1 - y0),
                20,
                "longer side fills the 20 px box"
            );
            assert!(x0 >= 4 && y0 >= 4 && x1 <= 24 && y1 <= 24, "centred");
        }
        assert!(
            per_class.iter().all(|&n| (170..=190).contains(&n)),
            "{per_class:?}"
        );
    }
}
