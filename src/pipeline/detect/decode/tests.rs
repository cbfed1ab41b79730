//! The decoders' tests, on planted tensors: every layout, the conventions, and malformed outputs.

use super::*;

/// The single-tensor families' decoders, as the engines hand them one output.
fn decode1(
    family: ModelFamily,
    data: &[f32],
    shape: &[i32],
    map: &InputMapping,
    src_w: u32,
    src_h: u32,
    floor: f32,
) -> Result<Vec<RawDetection>, LayoutError> {
    decode(
        family,
        0,
        &[Tensor { shape, data }],
        map,
        (src_w, src_h),
        floor,
    )
}

/// Planted NanoDet outputs for a `net` x `net` input, strides 8/16/32, `classes` classes and
/// 11 bins: every score 0 and every bin logit equal, but for what `plant` writes.
fn nanodet_outputs(net: u32, classes: usize) -> Vec<(Vec<i32>, Vec<f32>)> {
    let mut out = Vec::new();
    for s in [8u32, 16, 32] {
        let n = (net.div_ceil(s) * net.div_ceil(s)) as usize;
        out.push((vec![1, n as i32, classes as i32], vec![0.0; n * classes]));
        out.push((vec![1, n as i32, 44], vec![0.0; n * 44]));
    }
    out
}

/// Sets the bin logits of one side so that its expected distance is exactly `bins` (an
/// integer number of strides): one very large logit at that bin.
fn plant_side(boxes: &mut [f32], cell: usize, side: usize, bin: usize) {
    let base = cell * 44 + side * 11;
    boxes[base..base + 11].iter_mut().for_each(|v| *v = -50.0);
    boxes[base + bin] = 50.0;
}

fn approx(a: BBox, b: BBox) -> bool {
    (a.x - b.x).abs() < 0.5
        && (a.y - b.y).abs() < 0.5
        && (a.w - b.w).abs() < 0.5
        && (a.h - b.h).abs() < 0.5
}

#[test]
fn letterbox_of_a_4_3_frame_into_a_square_pads_top_and_bottom() {
    let m = InputMapping::letterbox(768, 576, 640, 640);
    assert!((m.scale_x - 640.0 / 768.0).abs() < 1e-6);
    assert_eq!(m.pad_x, 0.0);
    assert_eq!(m.pad_y, 80.0);
    assert_eq!(m.scaled_size(768, 576), (640, 480));
}

#[test]
fn fastestdet_cell_decodes_to_image_pixels() {
    // 2x2 grid, 3 classes: a confident class-2 object in cell (row 1, col 0).
    let (c, gh, gw) = (8usize, 2usize, 2usize);
    let mut data = vec![0.0f32; c * gh * gw];
    let cell = gw; // row 1, col 0
    let set = |data: &mut Vec<f32>, ch: usize, v: f32| data[ch * gh * gw + cell] = v;
    set(&mut data, 0, 0.9);
    set(&mut data, 1, 0.5f32.atanh()); // x offset 0.5 cell
    set(&mut data, 2, 0.0); // y offset 0
    set(&mut data, 3, 0.0); // sigmoid(0) = 0.5 of the width
    set(&mut data, 4, (0.25f32 / 0.75).ln()); // sigmoid = 0.25 of the height
    set(&mut data, 7, 0.8);
    let map = InputMapping::stretch(200, 100, 352, 352);
    let out = decode1(
        ModelFamily::Fastestdet,
        &data,
        &[1, c as i32, gh as i32, gw as i32],
        &map,
        200,
        100,
        0.3,
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].class_id, 2);
    assert!((out[0].score - 0.9f32.powf(0.6) * 0.8f32.powf(0.4)).abs() < 1e-5);
    // centre (0.25, 0.5) of 200x100 = (50, 50); size 100 x 25
    assert!(
        approx(out[0].bbox, BBox::from_center(50.0, 50.0, 100.0, 25.0)),
        "{:?}",
        out[0].bbox
    );
}

#[test]
fn yolo_boxes_are_mapped_back_through_the_letterbox() {
    // 2 candidates, 2 classes; network 640x640, source 768x576 (pad_y 80, scale 5/6).
    let n = 2;
    let rows = 6;
    let mut data = vec![0.0f32; rows * n];
    let put = |data: &mut Vec<f32>, r: usize, i: usize, v: f32| data[r * n + i] = v;
    // candidate 0: centre (320, 320) net, 100x50 net, class 1 at 0.9
    for (r, v) in [320.0, 320.0, 100.0, 50.0, 0.1, 0.9]
        .into_iter()
        .enumerate()
    {
        put(&mut data, r, 0, v);
    }
    // candidate 1: below the floor
    put(&mut data, 4, 1, 0.05);
    let map = InputMapping::letterbox(768, 576, 640, 640);
    let out = decode1(
        ModelFamily::Yolo,
        &data,
        &[1, rows as i32, n as i32],
        &map,
        768,
        576,
        0.25,
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].class_id, 1);
    // centre: x 320 / (5/6) = 384; y (320 - 80) / (5/6) = 288; size 120 x 60
    assert!(
        approx(out[0].bbox, BBox::from_center(384.0, 288.0, 120.0, 60.0)),
        "{:?}",
        out[0].bbox
    );
}

#[test]
fn yolov5_score_is_objectness_times_class() {
    let row = [100.0, 100.0, 20.0, 40.0, 0.5, 0.2, 0.9];
    let map = InputMapping::letterbox(640, 640, 640, 640);
    let out = decode1(ModelFamily::Yolov5, &row, &[1, 1, 7], &map, 640, 640, 0.1).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].class_id, 1);
    assert!((out[0].score - 0.45).abs() < 1e-6);
    assert!(approx(out[0].bbox, BBox::new(90.0, 80.0, 20.0, 40.0)));
}

#[test]
fn wrong_shape_is_an_error_not_a_panic() {
    let map = InputMapping::stretch(10, 10, 10, 10);
    assert!(decode1(
        ModelFamily::Yolo,
        &[0.0; 12],
        &[1, 85, 22, 22],
        &map,
        10,
        10,
        0.1
    )
    .is_err());
    assert!(decode1(
        ModelFamily::Yolov5,
        &[0.0; 6],
        &[1, 2, 6],
        &map,
        10,
        10,
        0.1
    )
    .is_err());
    assert!(decode1(
        ModelFamily::Fastestdet,
        &[0.0; 4],
        &[1, 4],
        &map,
        10,
        10,
        0.1
    )
    .is_err());
}

#[test]
fn nanodet_cell_decodes_to_source_pixels_from_its_centre_and_side_bins() {
    // 64x64 network, 2 classes: strides 8, 16, 32 give 8x8, 4x4 and 2x2 grids.
    let mut outs = nanodet_outputs(64, 2);
    // Stride 16, cell (row 1, col 2): centre (2.5 * 16, 1.5 * 16) = (40, 24). Class 1 at 0.8.
    let cell = 4 + 2;
    outs[2].1[cell * 2 + 1] = 0.8;
    for (side, bin) in [(0, 1), (1, 1), (2, 1), (3, 2)] {
        plant_side(&mut outs[3].1, cell, side, bin);
    }
    // The converter's order is not the decoder's: shuffle the tensors.
    outs.reverse();
    let tensors: Vec<Tensor> = outs
        .iter()
        .map(|(shape, data)| Tensor { shape, data })
        .collect();
    // Source 128x96, stretched: x / 2, y / 1.5 back to source pixels.
    let map = InputMapping::stretch(128, 96, 64, 64);
    let out = decode(ModelFamily::Nanodet, 2, &tensors, &map, (128, 96), 0.5).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].class_id, 1);
    assert!((out[0].score - 0.8).abs() < 1e-6);
    // Sides l 16, t 16, r 16, b 32 around (40, 24): x 24..56, y 8..56 in network pixels,
    // x 48..112, y 12..84 in the source's.
    assert!(
        approx(out[0].bbox, BBox::new(48.0, 12.0, 64.0, 72.0)),
        "{:?}",
        out[0].bbox
    );
}

#[test]
fn nanodet_side_distance_is_the_expected_bin_of_the_softmax() {
    // Two equal logits at bins 2 and 3: 2.5 strides.
    let mut logits = [-50.0f32; 11];
    logits[2] = 1.0;
    logits[3] = 1.0;
    assert!((expected_bin(&logits) - 2.5).abs() < 1e-5);
    // All equal: the middle, 5.
    assert!((expected_bin(&[0.3; 11]) - 5.0).abs() < 1e-5);
}

#[test]
fn nanodet_without_a_class_tensor_of_the_label_count_is_a_layout_error() {
    let outs = nanodet_outputs(64, 80);
    let tensors: Vec<Tensor> = outs
        .iter()
        .map(|(shape, data)| Tensor { shape, data })
        .collect();
    let map = InputMapping::stretch(64, 64, 64, 64);
    // 91 labels for an 80-class model: nothing to pair.
    assert!(decode(ModelFamily::Nanodet, 91, &tensors, &map, (64, 64), 0.1).is_err());
    assert!(decode(ModelFamily::Nanodet, 80, &tensors, &map, (64, 64), 0.1).is_ok());
    // A FastestDet tensor given to the NanoDet decoder.
    let grid = [0.0f32; 85 * 4];
    let t = [Tensor {
        shape: &[1, 85, 2, 2],
        data: &grid,
    }];
    assert!(decode(ModelFamily::Nanodet, 80, &t, &map, (64, 64), 0.1).is_err());
}

#[test]
fn nms_keeps_the_best_of_overlapping_boxes_per_class_only() {
    let d = |class_id, score, x| RawDetection {
        class_id,
        score,
        bbox: BBox::new(x, 0.0, 10.0, 10.0),
    };
    let kept = nms(
        vec![
            d(0, 0.5, 1.0),
            d(0, 0.9, 0.0),
            d(1, 0.6, 0.0),
            d(0, 0.7, 50.0),
        ],
        0.45,
    );
    let summary: Vec<(u32, f32)> = kept.iter().map(|k| (k.class_id, k.score)).collect();
    assert_eq!(summary, vec![(0, 0.9), (0, 0.7), (1, 0.6)]);
}
