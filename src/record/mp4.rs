//! The MP4 boxes recording needs, written and read: a segment file is an init segment
//! (`ftyp`+`moov` with an empty sample table) then fragments (`moof`+`mdat`); a clip is one
//! ordinary MP4, its index (`moov`) first and its samples in one `mdat`, served as a
//! [`VirtualFile`] whose sample bytes are never copied into memory before they are asked for.
//!
//! Times are on a 90 kHz clock. Reading tolerates a file cut anywhere: a fragment counts only
//! when its `mdat` is whole, which is what makes a crash lose at most the fragment in flight.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) use crate::capture::packets::{Codec, CodecConfig};

/// The track's clock: 90 kHz, RTP's video clock.
pub(crate) const TIMESCALE: u32 = 90_000;

/// The `stsd` box: one visual sample entry with the codec record.
fn stsd(cfg: &CodecConfig) -> Vec<u8> {
    let (entry, record) = match cfg.codec {
        Codec::H264 => (b"avc1", b"avcC"),
        Codec::H265 => (b"hvc1", b"hvcC"),
    };
    let mut e = Vec::with_capacity(100 + cfg.record.len());
    e.extend_from_slice(&[0; 6]); // reserved
    e.put_u16(1); // data_reference_index
    e.extend_from_slice(&[0; 16]); // pre_defined, reserved
    e.put_u16(cfg.width);
    e.put_u16(cfg.height);
    e.put_u32(0x0048_0000); // 72 dpi
    e.put_u32(0x0048_0000);
    e.put_u32(0);
    e.put_u16(1); // frame_count
    e.extend_from_slice(&[0; 32]); // compressorname
    e.put_u16(0x18); // depth
    e.put_i16(-1);
    e.extend_from_slice(&mp4_box(record, &cfg.record));
    let entry = mp4_box(entry, &e);
    full_box(b"stsd", 0, 0, &[&1u32.to_be_bytes()[..], &entry].concat())
}

/// One coded picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Decode time, 90 kHz, on the file's clock.
    pub(crate) dts: i64,
    pub(crate) duration: u32,
    /// Presentation time minus decode time (B-frames make it non-zero).
    pub(crate) cto: i32,
    pub(crate) key: bool,
    /// Length-prefixed NAL units (`avc`/`hvc1` stream format).
    pub(crate) data: Bytes,
}

fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 8);
    b.put_u32((body.len() + 8) as u32);
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

fn full_box(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.put_u32((version as u32) << 24 | flags);
    b.extend_from_slice(body);
    mp4_box(kind, &b)
}

const MATRIX: [u32; 9] = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000];

fn ftyp(fragmented: bool) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(if fragmented { b"iso6" } else { b"isom" });
    b.put_u32(0x200);
    for brand in [b"isom", b"iso6", b"avc1", b"mp41"] {
        b.extend_from_slice(brand);
    }
    mp4_box(b"ftyp", &b)
}

fn mvhd(duration_ms: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u64(0); // creation, modification
    b.put_u32(1000);
    b.put_u32(duration_ms.min(u32::MAX as u64) as u32);
    b.put_u32(0x10000); // rate 1.0
    b.put_u16(0x100); // volume 1.0
    b.extend_from_slice(&[0; 10]);
    MATRIX.iter().for_each(|m| b.put_u32(*m));
    b.extend_from_slice(&[0; 24]);
    b.put_u32(2); // next_track_ID
    full_box(b"mvhd", 0, 0, &b)
}

fn tkhd(cfg: &CodecConfig, duration_ms: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u64(0);
    b.put_u32(1); // track_ID
    b.put_u32(0);
    b.put_u32(duration_ms.min(u32::MAX as u64) as u32);
    b.put_u64(0);
    b.put_u32(0); // layer, alternate_group
    b.put_u32(0); // volume, reserved
    MATRIX.iter().for_each(|m| b.put_u32(*m));
    b.put_u32((cfg.width as u32) << 16);
    b.put_u32((cfg.height as u32) << 16);
    full_box(b"tkhd", 0, 3, &b)
}

fn mdia(cfg: &CodecConfig, duration: u64, tables: &[u8]) -> Vec<u8> {
    let mut mdhd = Vec::new();
    mdhd.put_u64(0);
    mdhd.put_u32(TIMESCALE);
    mdhd.put_u32(duration.min(u32::MAX as u64) as u32);
    mdhd.put_u16(0x55c4); // "und"
    mdhd.put_u16(0);
    let mut hdlr = Vec::new();
    hdlr.put_u32(0);
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 12]);
    hdlr.extend_from_slice(b"Ocellus video\0");
    let vmhd = full_box(b"vmhd", 0, 1, &[0; 8]);
    let url = full_box(b"url ", 0, 1, &[]);
    let dref = full_box(b"dref", 0, 0, &[&1u32.to_be_bytes()[..], &url].concat());
    let dinf = mp4_box(b"dinf", &dref);
    let stbl = mp4_box(b"stbl", &[&stsd(cfg)[..], tables].concat());
    let minf = mp4_box(b"minf", &[vmhd, dinf, stbl].concat());
    mp4_box(
        b"mdia",
        &[
            full_box(b"mdhd", 0, 0, &mdhd),
            full_box(b"hdlr", 0, 0, &hdlr),
            minf,
        ]
        .concat(),
    )
}

/// An `edts` whose one edit starts the media at `media_time` (90 kHz), or nothing when it
/// starts at 0.
fn edit_list(media_time: i64, duration_ms: u64) -> Vec<u8> {
    if media_time <= 0 {
        return Vec::new();
    }
    let mut b = Vec::new();
    b.put_u32(1);
    b.put_u32(duration_ms.min(u32::MAX as u64) as u32);
    b.put_i32(media_time.min(i32::MAX as i64) as i32);
    b.put_u32(0x10000); // media_rate 1.0
    mp4_box(b"edts", &full_box(b"elst", 0, 0, &b))
}

/// The init segment of a fragmented file: `ftyp` + `moov` with an empty sample table and `mvex`.
pub(crate) fn init_segment(cfg: &CodecConfig) -> Vec<u8> {
    let empty = [
        full_box(b"stts", 0, 0, &0u32.to_be_bytes()),
        full_box(b"stsc", 0, 0, &0u32.to_be_bytes()),
        full_box(b"stsz", 0, 0, &[0; 8]),
        full_box(b"stco", 0, 0, &0u32.to_be_bytes()),
    ]
    .concat();
    let trak = mp4_box(b"trak", &[tkhd(cfg, 0), mdia(cfg, 0, &empty)].concat());
    let mut trex = Vec::new();
    trex.put_u32(1); // track_ID
    trex.put_u32(1); // default_sample_description_index
    trex.put_u64(0);
    trex.put_u32(0);
    let mvex = mp4_box(b"mvex", &full_box(b"trex", 0, 0, &trex));
    [
        ftyp(true),
        mp4_box(b"moov", &[mvhd(0), trak, mvex].concat()),
    ]
    .concat()
}

const KEY_FLAGS: u32 = 0x0200_0000; // depends on no other sample
const DELTA_FLAGS: u32 = 0x0101_0000; // depends on others; not a sync sample

/// One fragment: `moof` + `mdat` holding `samples` (decode order), the first at `dts`.
pub(crate) fn fragment(sequence: u32, samples: &[Sample]) -> Vec<u8> {
    let data_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut mfhd = Vec::new();
    mfhd.put_u32(sequence);
    let mut tfhd = Vec::new();
    tfhd.put_u32(1); // track_ID
    let base = samples.first().map_or(0, |s| s.dts.max(0) as u64);
    // trun: data offset, and duration, size, flags and composition offset per sample.
    let mut trun = Vec::with_capacity(8 + samples.len() * 16);
    trun.put_u32(samples.len() as u32);
    trun.put_i32(0); // data_offset, patched below
    for s in samples {
        trun.put_u32(s.duration);
        trun.put_u32(s.data.len() as u32);
        trun.put_u32(if s.key { KEY_FLAGS } else { DELTA_FLAGS });
        trun.put_i32(s.cto);
    }
    let traf = mp4_box(
        b"traf",
        &[
            full_box(b"tfhd", 0, 0x02_0000, &tfhd), // default-base-is-moof
            full_box(b"tfdt", 1, 0, &base.to_be_bytes()),
            full_box(b"trun", 1, 0xf01, &trun),
        ]
        .concat(),
    );
    let mut moof = mp4_box(b"moof", &[full_box(b"mfhd", 0, 0, &mfhd), traf].concat());
    // The data offset counts from the moof's first byte to the first sample.
    let offset = (moof.len() + 8) as i32;
    let at = moof.len() - samples.len() * 16 - 4;
    moof[at..at + 4].copy_from_slice(&offset.to_be_bytes());
    let mut out = moof;
    out.reserve(data_len + 8);
    out.put_u32((data_len + 8) as u32);
    out.extend_from_slice(b"mdat");
    for s in samples {
        out.extend_from_slice(&s.data);
    }
    out
}

/// A sample found in a segment file: where its bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredSample {
    pub(crate) dts: i64,
    pub(crate) duration: u32,
    pub(crate) cto: i32,
    pub(crate) key: bool,
    pub(crate) offset: u64,
    pub(crate) size: u32,
}

/// What a segment file holds, read back.
#[derive(Clone, Debug)]
pub(crate) struct SegmentIndex {
    pub(crate) config: CodecConfig,
    pub(crate) samples: Vec<StoredSample>,
    /// Bytes up to the end of the last whole fragment: a file longer than this was cut mid-write.
    pub(crate) complete_len: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Mp4Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a recording segment: {what}")]
    Format { path: PathBuf, what: String },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.b.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_be_bytes(s.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.b.get(self.at..self.at + 8)?;
        self.at += 8;
        Some(u64::from_be_bytes(s.try_into().ok()?))
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        (self.at + n <= self.b.len()).then(|| self.at += n)
    }
}

/// The boxes directly inside `b`: (kind, body).
fn children(b: &[u8]) -> impl Iterator<Item = (&[u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        let kind: &[u8; 4] = b.get(at + 4..at + 8)?.try_into().ok()?;
        if size < 8 || at + size > b.len() {
            return None;
        }
        let body = &b[at + 8..at + size];
        at += size;
        Some((kind, body))
    })
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(b).find(|(k, _)| *k == kind).map(|(_, body)| body)
}

/// The codec config from a `moov` (as [`init_segment`] writes it, or any single-track file).
fn codec_from_moov(moov: &[u8]) -> Option<CodecConfig> {
    let trak = child(moov, b"trak")?;
    let stbl = child(child(child(trak, b"mdia")?, b"minf")?, b"stbl")?;
    let stsd = child(stbl, b"stsd")?;
    let (kind, entry) = children(stsd.get(8..)?).next()?;
    let codec = match kind {
        b"avc1" | b"avc3" => Codec::H264,
        b"hvc1" | b"hev1" => Codec::H265,
        _ => return None,
    };
    let width = u16::from_be_bytes(entry.get(24..26)?.try_into().ok()?);
    let height = u16::from_be_bytes(entry.get(26..28)?.try_into().ok()?);
    let record_kind = if codec == Codec::H264 {
        b"avcC"
    } else {
        b"hvcC"
    };
    let record = child(entry.get(78..)?, record_kind)?;
    Some(CodecConfig {
        codec,
        width,
        height,
        record: Bytes::copy_from_slice(record),
    })
}

/// The samples of one `moof` whose first byte is at `moof_at` in the file.
fn fragment_samples(moof: &[u8], moof_at: u64, out: &mut Vec<StoredSample>) -> Option<()> {
    let traf = child(moof, b"traf")?;
    let tfdt = child(traf, b"tfdt")?;
    let mut base = {
        let mut r = Reader { b: tfdt, at: 0 };
        let version = r.u8()?;
        r.skip(3)?;
        if version == 1 {
            r.u64()? as i64
        } else {
            r.u32()? as i64
        }
    };
    let trun = child(traf, b"trun")?;
    let mut r = Reader { b: trun, at: 0 };
    let flags = r.u32()? & 0xff_ffff;
    let count = r.u32()?;
    let mut offset = moof_at;
    if flags & 0x1 != 0 {
        offset = offset.checked_add_signed(r.u32()? as i32 as i64)?;
    }
    if flags & 0x4 != 0 {
        r.skip(4)?;
    }
    for _ in 0..count {
        let duration = if flags & 0x100 != 0 { r.u32()? } else { 0 };
        let size = if flags & 0x200 != 0 { r.u32()? } else { 0 };
        let sflags = if flags & 0x400 != 0 {
            r.u32()?
        } else {
            DELTA_FLAGS
        };
        let cto = if flags & 0x800 != 0 {
            r.u32()? as i32
        } else {
            0
        };
        out.push(StoredSample {
            dts: base,
            duration,
            cto,
            key: sflags & 0x0001_0000 == 0,
            offset,
            size,
        });
        base += duration as i64;
        offset += size as u64;
    }
    Some(())
}

/// Reads a segment file's index: its codec and every sample of its whole fragments.
pub(crate) fn read_segment(path: &Path) -> Result<SegmentIndex, Mp4Error> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |source| Mp4Error::Io {
        path: path.to_owned(),
        source,
    };
    // Only the boxes that index the samples are read; the media data is skipped, so that a
    // clip (asked for once per Range request) reads kilobytes of each segment, not megabytes.
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut boxes = Vec::new();
    let mut at = 0u64;
    while at + 8 <= len {
        let mut head = [0u8; 8];
        f.seek(SeekFrom::Start(at)).map_err(io)?;
        f.read_exact(&mut head).map_err(io)?;
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let kind = [head[4], head[5], head[6], head[7]];
        if size < 8 || at + size > len {
            break; // cut here: the box in flight when the writer stopped
        }
        let mut body = Vec::new();
        if &kind != b"mdat" {
            body.resize((size - 8) as usize, 0);
            f.read_exact(&mut body).map_err(io)?;
        }
        boxes.push(TopBox {
            at,
            size,
            kind,
            body,
        });
        at += size;
    }
    index_boxes(&boxes).ok_or_else(|| Mp4Error::Format {
        path: path.to_owned(),
        what: "no H.264/H.265 init segment".into(),
    })
}

/// A top-level box of a segment file: where it is, and its body (empty for `mdat`, which is not
/// read).
struct TopBox {
    at: u64,
    size: u64,
    kind: [u8; 4],
    body: Vec<u8>,
}

/// [`read_segment`] on bytes in memory.
pub(crate) fn index_segment(bytes: &[u8]) -> Option<SegmentIndex> {
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().ok()?;
        if size < 8 || at + size > bytes.len() {
            break; // cut here: the box in flight when the writer stopped
        }
        let body = if &kind == b"mdat" {
            Vec::new()
        } else {
            bytes[at + 8..at + size].to_vec()
        };
        boxes.push(TopBox {
            at: at as u64,
            size: size as u64,
            kind,
            body,
        });
        at += size;
    }
    index_boxes(&boxes)
}

/// The index of a segment from its whole top-level boxes, in order: a fragment counts when its
/// `moof` is followed by its whole `mdat`.
fn index_boxes(boxes: &[TopBox]) -> Option<SegmentIndex> {
    let mut config = None;
    let mut samples = Vec::new();
    let mut complete_len = 0u64;
    let mut pending_moof: Option<&TopBox> = None;
    for b in boxes {
        let end = b.at + b.size;
        match &b.kind {
            b"moov" => {
                config = codec_from_moov(&b.body);
                complete_len = end;
            }
            b"moof" => pending_moof = Some(b),
            b"mdat" => {
                if let Some(moof) = pending_moof.take() {
                    let before = samples.len();
                    if fragment_samples(&moof.body, moof.at, &mut samples).is_none()
                        || samples[before..]
                            .iter()
                            .any(|s| s.offset + s.size as u64 > end)
                    {
                        samples.truncate(before);
                        break;
                    }
                    complete_len = end;
                }
            }
            _ => {
                if complete_len == b.at {
                    complete_len = end;
                }
            }
        }
    }
    Some(SegmentIndex {
        config: config?,
        samples,
        complete_len,
    })
}

/// A part of a clip: bytes made here, or a run of bytes in a segment file.
#[derive(Clone, Debug)]
pub(crate) enum Part {
    Bytes(Bytes),
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Part {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// A file made of parts, read by range: a clip is built as its index plus pointers into the
/// segment files, so serving a byte range reads only those bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct VirtualFile {
    pub(crate) parts: Vec<Part>,
}

impl VirtualFile {
    pub(crate) fn len(&self) -> u64 {
        self.parts.iter().map(Part::len).sum()
    }

    /// Bytes `[start, end)`, read from the parts they fall in.
    pub(crate) fn read_range(&self, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut at = 0u64;
        for part in &self.parts {
            let (p0, p1) = (at, at + part.len());
            at = p1;
            let (s, e) = (start.max(p0), end.min(p1));
            if s >= e {
                continue;
            }
            match part {
                Part::Bytes(b) => out.extend_from_slice(&b[(s - p0) as usize..(e - p0) as usize]),
                Part::File { path, offset, .. } => {
                    let mut f = std::fs::File::open(path)?;
                    f.seek(SeekFrom::Start(offset + (s - p0)))?;
                    let n = (e - s) as usize;
                    let old = out.len();
                    out.resize(old + n, 0);
                    f.read_exact(&mut out[old..])?;
                }
            }
        }
        Ok(out)
    }
}

/// A clip's samples: (segment file, sample) in decode order, all of one codec config.
pub(crate) struct ClipSamples<'a> {
    pub(crate) config: &'a CodecConfig,
    pub(crate) samples: Vec<(&'a Path, StoredSample)>,
}

/// One MP4 with its index first: `ftyp`, `moov` (every sample's time, size and key flag), then
/// one `mdat` whose bytes are the segment files' own. The first sample's time is 0.
pub(crate) fn build_clip(clip: &ClipSamples) -> VirtualFile {
    let samples = &clip.samples;
    if samples.is_empty() {
        return VirtualFile::default();
    }
    let duration: u64 = samples.iter().map(|(_, s)| s.duration as u64).sum();
    // stts: runs of equal durations.
    let mut stts: Vec<(u32, u32)> = Vec::new();
    let mut ctts: Vec<(u32, i32)> = Vec::new();
    for (_, s) in samples {
        match stts.last_mut() {
            Some((n, d)) if *d == s.duration => *n += 1,
            _ => stts.push((1, s.duration)),
        }
        match ctts.last_mut() {
            Some((n, c)) if *c == s.cto => *n += 1,
            _ => ctts.push((1, s.cto)),
        }
    }
    let mut b = Vec::new();
    b.put_u32(stts.len() as u32);
    stts.iter().for_each(|(n, d)| {
        b.put_u32(*n);
        b.put_u32(*d)
    });
    let mut tables = full_box(b"stts", 0, 0, &b);
    if ctts.iter().any(|(_, c)| *c != 0) {
        let mut b = Vec::new();
        b.put_u32(ctts.len() as u32);
        ctts.iter().for_each(|(n, c)| {
            b.put_u32(*n);
            b.put_i32(*c)
        });
        tables.extend(full_box(b"ctts", 1, 0, &b));
    }
    let keys: Vec<u32> = (1..=samples.len() as u32)
        .filter(|i| samples[*i as usize - 1].1.key)
        .collect();
    let mut b = Vec::new();
    b.put_u32(keys.len() as u32);
    keys.iter().for_each(|k| b.put_u32(*k));
    tables.extend(full_box(b"stss", 0, 0, &b));
    // One chunk holding every sample: they follow each other in the mdat.
    let mut b = Vec::new();
    b.put_u32(1);
    b.put_u32(1);
    b.put_u32(samples.len() as u32);
    b.put_u32(1);
    tables.extend(full_box(b"stsc", 0, 0, &b));
    let mut b = Vec::new();
    b.put_u32(0);
    b.put_u32(samples.len() as u32);
    samples.iter().for_each(|(_, s)| b.put_u32(s.size));
    tables.extend(full_box(b"stsz", 0, 0, &b));
    let data_len: u64 = samples.iter().map(|(_, s)| s.size as u64).sum();
    let large = data_len + 8 > u32::MAX as u64;
    let mdat_header = if large { 16 } else { 8 };
    let duration_ms = duration * 1000 / TIMESCALE as u64;
    // With B-frames the first picture is presented after the first decode time: an edit list
    // starts the clip there, so that its time 0 is a picture.
    let mut dts = 0i64;
    let mut first_pts = i64::MAX;
    for (_, s) in samples {
        first_pts = first_pts.min(dts + s.cto as i64);
        dts += s.duration as i64;
    }
    // The chunk offset depends on the moov's size, which depends on the offset box's kind: a
    // 64-bit offset is used whenever the file could pass 4 GiB.
    let build_moov = |chunk_offset: u64| {
        let offset_box = if large {
            full_box(
                b"co64",
                0,
                0,
                &[&1u32.to_be_bytes()[..], &chunk_offset.to_be_bytes()].concat(),
            )
        } else {
            full_box(
                b"stco",
                0,
                0,
                &[1u32.to_be_bytes(), (chunk_offset as u32).to_be_bytes()].concat(),
            )
        };
        let stbl = [&tables[..], &offset_box].concat();
        let trak = mp4_box(
            b"trak",
            &[
                tkhd(clip.config, duration_ms),
                edit_list(first_pts, duration_ms),
                mdia(clip.config, duration, &stbl),
            ]
            .concat(),
        );
        mp4_box(b"moov", &[mvhd(duration_ms), trak].concat())
    };
    let ftyp = ftyp(false);
    let moov_len = build_moov(0).len() as u64;
    let chunk_offset = ftyp.len() as u64 + moov_len + mdat_header;
    let mut head = BytesMut::new();
    head.extend_from_slice(&ftyp);
    head.extend_from_slice(&build_moov(chunk_offset));
    if large {
        head.put_u32(1);
        head.extend_from_slice(b"mdat");
        head.put_u64(data_len + 16);
    } else {
        head.put_u32((data_len + 8) as u32);
        head.extend_from_slice(b"mdat");
    }
    let mut parts = vec![Part::Bytes(head.freeze())];
    // Runs of samples that follow each other in one file become one part.
    for (path, s) in samples {
        if let Some(Part::File {
            path: p,
            offset,
            len,
        }) = parts.last_mut()
        {
            if p.as_path() == *path && *offset + *len == s.offset {
                *len += s.size as u64;
                continue;
            }
        }
        parts.push(Part::File {
            path: path.to_path_buf(),
            offset: s.offset,
            len: s.size as u64,
        });
    }
    VirtualFile { parts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CodecConfig {
        CodecConfig {
            codec: Codec::H264,
            width: 640,
            height: 360,
            record: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
        }
    }

    fn sample(dts: i64, key: bool, fill: u8) -> Sample {
        Sample {
            dts,
            duration: 3600,
            cto: 0,
            key,
            data: Bytes::from(vec![fill; 100 + fill as usize]),
        }
    }

    #[test]
    fn a_written_segment_reads_back_sample_for_sample() {
        let mut file = init_segment(&config());
        let a = [sample(0, true, 1), sample(3600, false, 2)];
        let b = [sample(7200, true, 3)];
        file.extend(fragment(1, &a));
        file.extend(fragment(2, &b));
        let index = index_segment(&file).unwrap();
        assert_eq!(index.config, config());
        assert_eq!(index.complete_len, file.len() as u64);
        let got: Vec<_> = index
            .samples
            .iter()
            .map(|s| (s.dts, s.key, s.size))
            .collect();
        assert_eq!(
            got,
            vec![(0, true, 101), (3600, false, 102), (7200, true, 103)]
        );
        for (s, want) in index.samples.iter().zip([1u8, 2, 3]) {
            let bytes = &file[s.offset as usize..(s.offset + s.size as u64) as usize];
            assert!(bytes.iter().all(|b| *b == want));
        }
    }

    #[test]
    fn a_file_cut_mid_fragment_keeps_only_its_whole_fragments() {
        let mut file = init_segment(&config());
        file.extend(fragment(1, &[sample(0, true, 1)]));
        let whole = file.len();
        file.extend(fragment(2, &[sample(3600, true, 2)]));
        for cut in [whole + 3, whole + 60, file.len() - 1] {
            let index = index_segment(&file[..cut]).unwrap();
            assert_eq!(index.samples.len(), 1, "cut at {cut}");
            assert_eq!(index.complete_len, whole as u64);
            // Read from a file (media data skipped), the index is the same.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cut.mp4");
            std::fs::write(&path, &file[..cut]).unwrap();
            let read = read_segment(&path).unwrap();
            assert_eq!(
                (read.samples, read.complete_len),
                (index.samples, index.complete_len)
            );
        }
    }

    #[test]
    fn a_clip_has_its_index_first_and_points_at_the_segment_bytes() {
        let mut file = init_segment(&config());
        file.extend(fragment(1, &[sample(0, true, 1), sample(3600, false, 2)]));
        let index = index_segment(&file).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.mp4");
        std::fs::write(&path, &file).unwrap();
        let clip = build_clip(&ClipSamples {
            config: &index.config,
            samples: index.samples.iter().map(|s| (path.as_path(), *s)).collect(),
        });
        let bytes = clip.read_range(0, clip.len()).unwrap();
        let kinds: Vec<_> = children(&bytes).map(|(k, _)| *k).collect();
        assert_eq!(kinds, [*b"ftyp", *b"moov", *b"mdat"]);
        let mdat = child(&bytes, b"mdat").unwrap();
        assert_eq!(mdat.len(), 101 + 102);
        // A range across the head and the samples reads the right bytes.
        let n = bytes.len() as u64;
        assert_eq!(
            clip.read_range(n - 150, n - 90).unwrap(),
            bytes[n as usize - 150..n as usize - 90]
        );
        // stco points at the mdat's body.
        let moov = child(&bytes, b"moov").unwrap();
        let stbl = child(
            child(
                child(child(moov, b"trak").unwrap(), b"mdia").unwrap(),
                b"minf",
            )
            .unwrap(),
            b"stbl",
        )
        .unwrap();
        let stco = child(stbl, b"stco").unwrap();
        let offset = u32::from_be_bytes(stco[8..12].try_into().unwrap()) as usize;
        assert!(bytes[offset..offset + 101].iter().all(|b| *b == 1));
    }

    #[test]
    fn a_clip_with_b_frames_starts_at_its_first_picture() {
        let mut file = init_segment(&config());
        let mut a = [
            sample(0, true, 1),
            sample(3600, false, 2),
            sample(7200, false, 3),
        ];
        // I P B in decode order, shown I B P: the I frame at 7200, the B at 10800.
        a[0].cto = 7200;
        a[1].cto = 10800;
        a[2].cto = 0;
        file.extend(fragment(1, &a));
        let index = index_segment(&file).unwrap();
        let path = Path::new("/nonexistent");
        let clip = build_clip(&ClipSamples {
            config: &index.config,
            samples: index.samples.iter().map(|s| (path, *s)).collect(),
        });
        let Part::Bytes(head) = &clip.parts[0] else {
            panic!("the head comes first")
        };
        let moov = child(head, b"moov").unwrap();
        let elst = child(
            child(child(moov, b"trak").unwrap(), b"edts").unwrap(),
            b"elst",
        )
        .unwrap();
        let media_time = i32::from_be_bytes(elst[12..16].try_into().unwrap());
        assert_eq!(media_time, 7200);
        // Without B-frames there is no edit list.
        let plain = build_clip(&ClipSamples {
            config: &index.config,
            samples: vec![(
                path,
                StoredSample {
                    cto: 0,
                    ..index.samples[0]
                },
            )],
        });
        let Part::Bytes(head) = &plain.parts[0] else {
            panic!()
        };
        let trak = child(child(head, b"moov").unwrap(), b"trak").unwrap();
        assert!(child(trak, b"edts").is_none());
    }

    #[test]
    fn codec_string_reads_profile_and_level_from_avcc() {
        assert_eq!(config().codec_string(), "avc1.64001f");
    }
}
