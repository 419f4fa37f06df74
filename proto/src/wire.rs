//! wire: a zero-copy reader of the protobuf wire format, enough for the
//! telemetry.v1 messages the gateway receives and the compactor reads.
//!
//! Why not prost alone: decoding a `LogBatch` with prost allocates a
//! `String` or `Vec` for every body, attribute key and value of every event,
//! only for the compactor to copy them into Arrow right after — profiling
//! put that at a third of the compactor's CPU; and the gateway, which only
//! checks a request and forwards its events, spent half its instructions
//! decoding them and the other half encoding them again. This reader
//! borrows from the message instead. It is deliberately *sound but not
//! complete*: anything unusual (a singular message field sent twice, which
//! prost would merge; groups; deep nesting) is reported as [`WireError`],
//! and the caller then lets prost decide (the record reader's `decode`, the
//! gateway's `scan`), so prost stays the authority on what a valid message
//! is. Field numbers come from [`crate::contract::tags`].

use crate::contract::tags;

/// Why the reader stopped. The caller falls back to prost on any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

/// Result of the reader.
pub type WireResult<T> = Result<T, WireError>;

/// Wire type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// 0: varint.
    Varint,
    /// 1: 8 bytes.
    I64,
    /// 2: length-delimited.
    Len,
    /// 5: 4 bytes.
    I32,
}

/// A cursor over one message's bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Byte position in the message.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next field's number and wire type, or `None` at the end.
    #[inline]
    pub fn field(&mut self) -> WireResult<Option<(u32, Wire)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(WireError("invalid field number"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::I64,
            2 => Wire::Len,
            5 => Wire::I32,
            3 | 4 => return Err(WireError("group wire type")),
            _ => return Err(WireError("invalid wire type")),
        };
        Ok(Some((number as u32, wire)))
    }

    /// A varint (up to 10 bytes, as prost accepts).
    #[inline(always)]
    pub fn varint(&mut self) -> WireResult<u64> {
        // Most varints here (tags, lengths) are one byte; lengths of
        // events and bodies often two.
        match self.buf.get(self.pos..) {
            Some([b0, ..]) if *b0 < 0x80 => {
                self.pos += 1;
                Ok(u64::from(*b0))
            }
            Some([b0, b1, ..]) if *b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | (u64::from(*b1) << 7))
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> WireResult<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return Err(WireError("varint overflows 64 bits"));
                }
                return Ok(value);
            }
        }
        Err(WireError("varint longer than 10 bytes"))
    }

    #[inline]
    fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(WireError("truncated field"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// A fixed64 value.
    #[inline]
    pub fn fixed64(&mut self) -> WireResult<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A fixed32 value.
    #[inline]
    pub fn fixed32(&mut self) -> WireResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// A length-delimited value's bytes.
    #[inline]
    pub fn bytes(&mut self) -> WireResult<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| WireError("length overflows"))?;
        self.take(len)
    }

    /// A length-delimited value that must be UTF-8 (proto `string`).
    #[inline]
    pub fn string(&mut self) -> WireResult<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError("string is not UTF-8"))
    }

    /// Checks a proto `string` without making a `&str` of it, for readers
    /// that only validate. ASCII, nearly every log string, is checked a word
    /// at a time; std's UTF-8 check goes byte by byte over short strings and
    /// was a quarter of the gateway's scan (BENCHMARKS.md, "Instruction
    /// counts").
    #[inline]
    pub fn check_string(&mut self) -> WireResult<()> {
        let bytes = self.bytes()?;
        if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
            Ok(())
        } else {
            Err(WireError("string is not UTF-8"))
        }
    }

    /// Skips a value of an unknown field.
    #[inline]
    pub fn skip(&mut self, wire: Wire) -> WireResult<()> {
        match wire {
            Wire::Varint => self.varint().map(drop),
            Wire::I64 => self.take(8).map(drop),
            Wire::I32 => self.take(4).map(drop),
            Wire::Len => self.bytes().map(drop),
        }
    }

    /// Reads a known field's value, checking its wire type.
    #[inline]
    pub fn expect(&mut self, got: Wire, want: Wire) -> WireResult<&mut Self> {
        if got == want {
            Ok(self)
        } else {
            Err(WireError("wrong wire type for a known field"))
        }
    }
}

/// The value of an `AnyValue`, borrowed; its strings are `S` (`&str`, or
/// `()` when only checked).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Any<'a, S = &'a str> {
    /// No oneof field set.
    Empty,
    /// `string_value`.
    Str(S),
    /// Any other kind: the `AnyValue` message's bytes (rendered by prost, rarely needed).
    Other(&'a [u8]),
}

/// How deep nested values the reader follows on a first read before
/// handing the record to prost (whose own limit is 100).
pub const MAX_DEPTH: u32 = 32;

/// Depth budget for bytes prost has accepted (its limit, 100, bounds them).
pub const PROST_DEPTH: u32 = 200;

/// How the value readers take a string: borrowed as `&str`, or only checked.
trait Strings<'a> {
    type Str: Copy + PartialEq + Default;
    fn read(r: &mut Reader<'a>) -> WireResult<Self::Str>;
}

/// Strings as `&str`.
struct Borrowed;

impl<'a> Strings<'a> for Borrowed {
    type Str = &'a str;

    #[inline]
    fn read(r: &mut Reader<'a>) -> WireResult<&'a str> {
        r.string()
    }
}

/// Strings checked, not kept.
struct Checked;

impl<'a> Strings<'a> for Checked {
    type Str = ();

    #[inline]
    fn read(r: &mut Reader<'a>) -> WireResult<()> {
        r.check_string()
    }
}

/// Reads (and validates) one `AnyValue` message, nested at most `budget` deep.
pub fn any_value(bytes: &[u8], budget: u32) -> WireResult<Any<'_>> {
    any_value_as::<Borrowed>(bytes, budget)
}

/// Validates one `AnyValue` message as [`any_value`] does, without making
/// `&str`s of its strings (cheaper, for readers that only check).
pub fn check_any_value(bytes: &[u8], budget: u32) -> WireResult<()> {
    if budget > 0 && plain_string(bytes).is_some_and(<[u8]>::is_ascii) {
        return Ok(());
    }
    any_value_as::<Checked>(bytes, budget).map(drop)
}

/// Reads one `KeyValue` message: its key and (if present) its value.
pub fn key_value(bytes: &[u8], budget: u32) -> WireResult<(&str, Option<Any<'_>>)> {
    key_value_as::<Borrowed>(bytes, budget)
}

/// Validates one `KeyValue` message as [`key_value`] does, without making
/// `&str`s of its strings.
pub fn check_key_value(bytes: &[u8], budget: u32) -> WireResult<()> {
    if budget > 0
        && let Some((key, text)) = plain_key_value(bytes)
        && key.is_ascii()
        && text.is_ascii()
    {
        return Ok(());
    }
    key_value_as::<Checked>(bytes, budget).map(drop)
}

/// The string bytes of an `AnyValue` holding a string and nothing else
/// (field 1 once), not yet checked as UTF-8; `None` for any other shape.
///
/// With [`plain_key_value`], the short way for the shape nearly every
/// attribute and body has: a fixed sequence of tag and length bytes
/// compared in one pass, where the general readers loop over fields and
/// dispatch on each (the loops were a third of the gateway's scan,
/// BENCHMARKS.md "Instruction counts"). Whatever these accept with UTF-8
/// strings, the general readers accept and read the same (a unit test
/// holds them to it).
#[inline]
pub fn plain_string(any_value: &[u8]) -> Option<&[u8]> {
    let (text, rest) = len_field(any_value, tags::any_value::STRING)?;
    rest.is_empty().then_some(text)
}

/// Key and string bytes of a `KeyValue` that is exactly `key`, then a
/// `value` for which [`plain_string`] holds, neither checked as UTF-8;
/// `None` for any other shape.
#[inline]
pub fn plain_key_value(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (key, rest) = len_field(bytes, tags::key_value::KEY)?;
    let (value, rest) = len_field(rest, tags::key_value::VALUE)?;
    if !rest.is_empty() {
        return None;
    }
    Some((key, plain_string(value)?))
}

/// `bytes` starting with length-delimited field `field` (its key a single
/// byte): the field's value and what follows it.
#[inline(always)]
fn len_field(bytes: &[u8], field: u32) -> Option<(&[u8], &[u8])> {
    debug_assert!(field < 16, "a one-byte key");
    let (&key, rest) = bytes.split_first()?;
    if u32::from(key) != (field << 3) | 2 {
        return None;
    }
    let mut r = Reader::new(rest);
    let value = r.bytes().ok()?;
    Some((value, &rest[r.pos..]))
}

fn any_value_as<'a, S: Strings<'a>>(bytes: &'a [u8], budget: u32) -> WireResult<Any<'a, S::Str>> {
    let Some(budget) = budget.checked_sub(1) else {
        return Err(WireError("nesting too deep"));
    };
    let mut r = Reader::new(bytes);
    let mut value = Any::Empty;
    while let Some((field, wire)) = r.field()? {
        if value != Any::Empty
            && (tags::any_value::STRING..=tags::any_value::BYTES).contains(&field)
        {
            // Oneof set twice: prost keeps the last (or merges messages).
            return Err(WireError("AnyValue with two values"));
        }
        match field {
            tags::any_value::STRING => value = Any::Str(S::read(r.expect(wire, Wire::Len)?)?),
            tags::any_value::BOOL | tags::any_value::INT => {
                r.expect(wire, Wire::Varint)?.varint()?;
                value = Any::Other(bytes);
            }
            tags::any_value::DOUBLE => {
                r.expect(wire, Wire::I64)?.fixed64()?;
                value = Any::Other(bytes);
            }
            tags::any_value::ARRAY => {
                // ArrayValue { repeated AnyValue values = 1 }
                let array = r.expect(wire, Wire::Len)?.bytes()?;
                let mut a = Reader::new(array);
                while let Some((f, w)) = a.field()? {
                    if f == tags::VALUES {
                        any_value_as::<S>(a.expect(w, Wire::Len)?.bytes()?, budget)?;
                    } else {
                        a.skip(w)?;
                    }
                }
                value = Any::Other(bytes);
            }
            tags::any_value::KVLIST => {
                // KeyValueList { repeated KeyValue values = 1 }
                let list = r.expect(wire, Wire::Len)?.bytes()?;
                let mut l = Reader::new(list);
                while let Some((f, w)) = l.field()? {
                    if f == tags::VALUES {
                        key_value_as::<S>(l.expect(w, Wire::Len)?.bytes()?, budget)?;
                    } else {
                        l.skip(w)?;
                    }
                }
                value = Any::Other(bytes);
            }
            tags::any_value::BYTES => {
                r.expect(wire, Wire::Len)?.bytes()?;
                value = Any::Other(bytes);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(value)
}

/// A `KeyValue`'s key and value, strings as `S` has them.
type KeyValueOf<'a, S> = (S, Option<Any<'a, S>>);

fn key_value_as<'a, S: Strings<'a>>(
    bytes: &'a [u8],
    budget: u32,
) -> WireResult<KeyValueOf<'a, S::Str>> {
    let mut r = Reader::new(bytes);
    let mut key = S::Str::default();
    let mut value = None;
    while let Some((field, wire)) = r.field()? {
        match field {
            tags::key_value::KEY => key = S::read(r.expect(wire, Wire::Len)?)?,
            tags::key_value::VALUE => {
                if value.is_some() {
                    return Err(WireError("KeyValue with two values"));
                }
                value = Some(any_value_as::<S>(
                    r.expect(wire, Wire::Len)?.bytes()?,
                    budget,
                )?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_spec() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Ok(150));
        assert_eq!(Reader::new(&[0x00]).varint(), Ok(0));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Reader::new(&over).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn truncated_and_bad_fields_are_errors() {
        // field 1, LEN, length 5 but 2 bytes follow
        assert!(Reader::new(&[0x0a, 0x05, b'a', b'b']).bytes().is_err());
        let mut r = Reader::new(&[0x0b]); // field 1, group start
        assert!(r.field().is_err());
        let mut r = Reader::new(&[0x07]); // field 0
        assert!(r.field().is_err());
        // invalid UTF-8 in a string
        assert!(Reader::new(&[0x02, 0xff, 0xfe]).string().is_err());
    }

    #[test]
    fn checking_agrees_with_reading() {
        // (bytes of an AnyValue) → whether it reads; every string kind of UTF-8.
        let string = |s: &[u8]| [&[0x0a, s.len() as u8][..], s].concat();
        let values: Vec<(Vec<u8>, bool)> = vec![
            (string(b"plain ascii, longer than a word or two"), true),
            (string("caf\u{e9} \u{1f600}".as_bytes()), true),
            (string(&[b'a', 0xff, b'b']), false),
            (string(&[0xe2, 0x82]), false), // a truncated 3-byte sequence
            (string(&[0xed, 0xa0, 0x80]), false), // a surrogate
            (string(b""), true),
            (vec![0x18, 0x07], true),
            (vec![0x0a, 0x05, b'a'], false),
        ];
        for (bytes, ok) in &values {
            assert_eq!(any_value(bytes, 2).is_ok(), *ok, "{bytes:?}");
            assert_eq!(check_any_value(bytes, 2).is_ok(), *ok, "{bytes:?}");
            // The same value inside a KeyValue with an ASCII and a non-ASCII key.
            for key in [&b"k"[..], "\u{e9}".as_bytes(), &[0xc3][..]] {
                let kv = [
                    &[0x0a, key.len() as u8][..],
                    key,
                    &[0x12, bytes.len() as u8],
                    bytes,
                ]
                .concat();
                let want = *ok && std::str::from_utf8(key).is_ok();
                assert_eq!(key_value(&kv, 2).is_ok(), want, "{kv:?}");
                assert_eq!(check_key_value(&kv, 2).is_ok(), want, "{kv:?}");
            }
            let mut r = Reader::new(bytes);
            if let Ok(Some((1, Wire::Len))) = r.field() {
                let (mut a, mut b) = (r.clone(), r);
                assert_eq!(a.string().is_ok(), b.check_string().is_ok(), "{bytes:?}");
            }
        }
    }

    #[test]
    fn the_short_way_agrees_with_the_general_readers() {
        // KeyValues of the common shape (a 200-byte value: a two-byte
        // length) and every truncation and one-byte change of them: where
        // the short way reads, the general reader reads the same, and the
        // checks that take it answer as the general reader does.
        let long = "v".repeat(200);
        let kv = |key: &[u8], value: &[u8]| {
            let any = [&[0x0a, value.len() as u8][..], value].concat();
            [
                &[0x0a, key.len() as u8][..],
                key,
                &[0x12, any.len() as u8],
                &any,
            ]
            .concat()
        };
        let mut cases = vec![
            kv(b"http.route", b"/api/v1/orders"),
            kv(b"", b""),
            kv("caf\u{e9}".as_bytes(), b"x"),
        ];
        let mut body = vec![0x0a, 0xc8, 0x01];
        body.extend_from_slice(long.as_bytes());
        let mut with_long = vec![0x0a, 0x01, b'k', 0x12, 0xcb, 0x01];
        with_long.extend_from_slice(&body);
        cases.push(with_long);
        let originals = cases.clone();
        for original in &originals {
            for end in 0..original.len() {
                cases.push(original[..end].to_vec());
            }
            for at in 0..original.len() {
                for byte in [0x00, 0x01, 0x0a, 0x12, 0x1a, 0x7f, 0x80, 0xff] {
                    let mut changed = original.clone();
                    changed[at] = byte;
                    cases.push(changed);
                }
            }
        }
        for bytes in &cases {
            if let Some((key, text)) = plain_key_value(bytes)
                && let (Ok(key), Ok(text)) = (std::str::from_utf8(key), std::str::from_utf8(text))
            {
                assert_eq!(
                    key_value(bytes, 2),
                    Ok((key, Some(Any::Str(text)))),
                    "{bytes:?}"
                );
            }
            if let Some(text) = plain_string(bytes)
                && let Ok(text) = std::str::from_utf8(text)
            {
                assert_eq!(any_value(bytes, 2), Ok(Any::Str(text)), "{bytes:?}");
            }
            // Depth 0: the general readers refuse any value; so must the checks.
            for budget in [0, 2] {
                let (checked, read) = (check_key_value(bytes, budget), key_value(bytes, budget));
                assert_eq!(checked.is_ok(), read.is_ok(), "{bytes:?} at {budget}");
                let (checked, read) = (check_any_value(bytes, budget), any_value(bytes, budget));
                assert_eq!(checked.is_ok(), read.is_ok(), "{bytes:?} at {budget}");
            }
        }
        assert_eq!(plain_string(&body), Some(long.as_bytes()));
    }

    #[test]
    fn any_values_borrow_strings() {
        assert_eq!(any_value(&[0x0a, 0x02, b'h', b'i'], 1), Ok(Any::Str("hi")));
        assert_eq!(any_value(&[], 1), Ok(Any::Empty));
        let int = [0x18, 0x07];
        assert_eq!(any_value(&int, 1), Ok(Any::Other(&int[..])));
        // two values: left to prost
        assert!(any_value(&[0x18, 0x07, 0x18, 0x08], 1).is_err());
        // an array in an array: two levels
        let nested = [0x2a, 0x04, 0x0a, 0x02, 0x2a, 0x00];
        assert!(any_value(&nested, 2).is_ok());
        assert!(any_value(&nested, 1).is_err());
    }
}
