//! Frame Streams (the fstrm protocol dnstap travels in): length-prefixed data frames, and
//! control frames (READY, ACCEPT, START, STOP, FINISH) behind a zero "escape" length.
//!
//! Written here rather than taken from a crate: the `framestream` crate only encodes (a
//! writer), and `dnstap-utils`' decoder is part of a set of binaries that pulls in an HTTP
//! server, Prometheus and a build-time `protoc`. The format is small: the header checks and the
//! control-frame parser live here, once, for the file reader below and for the agent's live
//! socket (which reads the same frames asynchronously).
//!
//! Hostile input: every length is checked before anything is read or allocated (data frames
//! against the caller's bound, control frames against [`MAX_CONTROL`]); a bad frame is an
//! error that ends the stream (it cannot be resynchronised), never a panic. May touch: the
//! bytes and the reader it is given.

use std::io::{self, Read};

/// A control frame's length may not exceed this (fstrm's `FSTRM_CONTROL_FRAME_LENGTH_MAX`).
pub const MAX_CONTROL: usize = 512;

/// The only control field type: a content type.
const FIELD_CONTENT_TYPE: u32 = 1;

/// The control frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    Accept,
    Start,
    Stop,
    Ready,
    Finish,
}

impl ControlKind {
    fn code(self) -> u32 {
        match self {
            ControlKind::Accept => 1,
            ControlKind::Start => 2,
            ControlKind::Stop => 3,
            ControlKind::Ready => 4,
            ControlKind::Finish => 5,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        Some(match c {
            1 => ControlKind::Accept,
            2 => ControlKind::Start,
            3 => ControlKind::Stop,
            4 => ControlKind::Ready,
            5 => ControlKind::Finish,
            _ => return None,
        })
    }
}

/// A decoded control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub kind: ControlKind,
    pub content_types: Vec<Vec<u8>>,
}

impl Control {
    /// Whether it names `content_type`, or names none (which fstrm takes as any).
    pub fn offers(&self, content_type: &[u8]) -> bool {
        self.content_types.is_empty() || self.content_types.iter().any(|c| c == content_type)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    #[error("stream ends inside a frame")]
    Truncated,
    #[error("data frame of {len} bytes is over the {max}-byte bound")]
    DataTooLong { len: usize, max: usize },
    #[error("control frame of {0} bytes is over the {MAX_CONTROL}-byte bound")]
    ControlTooLong(usize),
    #[error("bad control frame: {0}")]
    BadControl(&'static str),
    #[error("unknown control frame type {0}")]
    UnknownControl(u32),
}

/// One frame read by [`read_frame`]: data (the payload is in the caller's buffer) or control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Data,
    Control(Control),
}

/// What the first four bytes of a frame say: a data frame of that length, or a control frame
/// follows (its own length comes next).
pub fn data_len(prefix: [u8; 4], max: usize) -> Result<Option<usize>, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Ok(None);
    }
    if len > max {
        return Err(FrameError::DataTooLong { len, max });
    }
    Ok(Some(len))
}

/// A control frame's length, checked against [`MAX_CONTROL`].
pub fn control_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(FrameError::ControlTooLong(len));
    }
    Ok(len)
}

/// Parses a control frame's body (after its length).
pub fn parse_control(body: &[u8]) -> Result<Control, FrameError> {
    let mut cur = body;
    let code = take_u32(&mut cur).ok_or(FrameError::BadControl("no type"))?;
    let kind = ControlKind::from_code(code).ok_or(FrameError::UnknownControl(code))?;
    let mut content_types = Vec::new();
    while !cur.is_empty() {
        let field = take_u32(&mut cur).ok_or(FrameError::BadControl("field cut short"))?;
        let len = take_u32(&mut cur).ok_or(FrameError::BadControl("field cut short"))? as usize;
        let (value, rest) = cur
            .split_at_checked(len)
            .ok_or(FrameError::BadControl("field longer than the frame"))?;
        if field == FIELD_CONTENT_TYPE {
            content_types.push(value.to_vec());
        }
        cur = rest;
    }
    Ok(Control {
        kind,
        content_types,
    })
}

fn take_u32(cur: &mut &[u8]) -> Option<u32> {
    let (head, rest) = cur.split_first_chunk::<4>()?;
    *cur = rest;
    Some(u32::from_be_bytes(*head))
}

/// A whole control frame (escape, length, type, content-type fields) ready to write.
pub fn control_frame(kind: ControlKind, content_types: &[&[u8]]) -> Vec<u8> {
    let mut body = kind.code().to_be_bytes().to_vec();
    for c in content_types {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(c.len() as u32).to_be_bytes());
        body.extend_from_slice(c);
    }
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A whole data frame ready to write.
pub fn data_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Whether `head` starts a Frame Streams stream: an escape, then a START control frame.
pub fn is_stream_start(head: &[u8]) -> bool {
    let word = |i: usize| head.get(i..i + 4).and_then(|b| <[u8; 4]>::try_from(b).ok());
    word(0) == Some([0; 4])
        && word(4).is_some_and(|l| control_len(l).is_ok())
        && word(8) == Some(ControlKind::Start.code().to_be_bytes())
}

/// Reads the next frame of a stream; a data frame's payload replaces `buf`'s contents. `None`
/// at the end of the stream between frames.
pub fn read_frame<R: Read>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max_data: usize,
) -> Result<Option<FrameKind>, FrameError> {
    let mut prefix = [0u8; 4];
    if !read_all_or_nothing(r, &mut prefix)? {
        return Ok(None);
    }
    buf.clear();
    if let Some(len) = data_len(prefix, max_data)? {
        buf.resize(len, 0);
        read_exact(r, buf)?;
        return Ok(Some(FrameKind::Data));
    }
    read_exact(r, &mut prefix)?;
    let len = control_len(prefix)?;
    let mut body = [0u8; MAX_CONTROL];
    let body = body.get_mut(..len).ok_or(FrameError::ControlTooLong(len))?;
    read_exact(r, body)?;
    Ok(Some(FrameKind::Control(parse_control(body)?)))
}

/// Fills `out`; `false` if the stream ended before its first byte.
fn read_all_or_nothing<R: Read>(r: &mut R, out: &mut [u8]) -> Result<bool, FrameError> {
    let mut n = 0;
    while n < out.len() {
        let Some(rest) = out.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn read_exact<R: Read>(r: &mut R, out: &mut [u8]) -> Result<(), FrameError> {
    r.read_exact(out).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let ct: &[u8] = b"protobuf:dnstap.Dnstap";
        let mut s = control_frame(ControlKind::Start, &[ct]);
        assert!(is_stream_start(&s));
        s.extend(data_frame(b"hello"));
        s.extend(control_frame(ControlKind::Stop, &[]));
        let mut r = &s[..];
        let mut buf = Vec::new();
        let f = read_frame(&mut r, &mut buf, 16).unwrap().unwrap();
        assert_eq!(
            f,
            FrameKind::Control(Control {
                kind: ControlKind::Start,
                content_types: vec![ct.to_vec()]
            })
        );
        assert_eq!(
            read_frame(&mut r, &mut buf, 16).unwrap(),
            Some(FrameKind::Data)
        );
        assert_eq!(buf, b"hello");
        let Some(FrameKind::Control(c)) = read_frame(&mut r, &mut buf, 16).unwrap() else {
            panic!("stop expected")
        };
        assert_eq!(c.kind, ControlKind::Stop);
        assert!(c.offers(ct));
        assert!(read_frame(&mut r, &mut buf, 16).unwrap().is_none());

        // Over the data bound, an oversized control frame, a cut frame, an unknown type.
        let big = data_frame(&[0; 17]);
        assert!(matches!(
            read_frame(&mut &big[..], &mut buf, 16),
            Err(FrameError::DataTooLong { len: 17, .. })
        ));
        let huge = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &huge[..], &mut buf, 16),
            Err(FrameError::ControlTooLong(_))
        ));
        assert!(matches!(
            read_frame(&mut &data_frame(b"abc")[..2], &mut buf, 16),
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            parse_control(&[0, 0, 0, 9]),
            Err(FrameError::UnknownControl(9))
        ));
        assert!(parse_control(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 0, b'x']).is_err());
        assert!(!is_stream_start(&data_frame(b"x")));
    }
}
