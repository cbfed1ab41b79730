//! The one JPEG encoder: libjpeg-turbo through OpenCV's `imencode`, at a set quality, into a
//! buffer reused from one image to the next. The live stream, replay's `--encode-frames` and
//! event snapshots all encode through it.

use opencv::core::{Mat, Vector};
use opencv::imgcodecs;

pub(crate) struct JpegEncoder {
    params: Vector<i32>,
    buf: Vector<u8>,
}

impl JpegEncoder {
    /// `quality`: 1-100, as libjpeg's.
    pub(crate) fn new(quality: u8) -> Self {
        Self {
            params: Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, quality.into()]),
            buf: Vector::new(),
        }
    }

    /// Encodes a BGR image; the bytes are valid until the next call.
    pub(crate) fn encode(&mut self, image: &Mat) -> opencv::Result<&[u8]> {
        imgcodecs::imencode(".jpg", image, &mut self.buf, &self.params)?;
        Ok(self.buf.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};
    use opencv::prelude::*;

    #[test]
    fn encodes_a_jpeg_that_decodes_to_the_same_size_and_quality_sets_its_size() {
        let mut image = Mat::new_rows_cols_with_default(48, 64, CV_8UC3, Scalar::all(0.0)).unwrap();
        // Some detail, so that quality matters.
        for y in 0..48 {
            for x in 0..64 {
                *image.at_2d_mut::<opencv::core::Vec3b>(y, x).unwrap() =
                    opencv::core::Vec3b::from([
                        (x * 4) as u8,
                        (y * 5) as u8,
                        ((x * y) % 256) as u8,
                    ]);
            }
        }
        let mut low = JpegEncoder::new(20);
        let mut high = JpegEncoder::new(95);
        let small = low.encode(&image).unwrap().to_vec();
        let large = high.encode(&image).unwrap().to_vec();
        assert_eq!(&small[..2], &[0xFF, 0xD8], "a JPEG starts with SOI");
        assert!(
            small.len() < large.len(),
            "{} vs {}",
            small.len(),
            large.len()
        );
        let back =
            imgcodecs::imdecode(&Vector::from_slice(&large), imgcodecs::IMREAD_COLOR).unwrap();
        assert_eq!((back.cols(), back.rows()), (64, 48));
    }
}
