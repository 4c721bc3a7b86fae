//! git's pkt-line framing (Documentation/gitprotocol-common.txt): four hex
//! digits of length (the four included), then that many bytes less four;
//! `0000` is a flush, `0001` a delimiter, `0002` a response end. Anything
//! else below four, or a length past the protocol's 65520, is malformed.

use super::GitError;

/// The longest pkt-line the protocol allows, its length prefix included.
const MAX_LINE: usize = 65520;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkt<'a> {
    Flush,
    Delim,
    ResponseEnd,
    /// The line's payload, its trailing LF still on.
    Data(&'a [u8]),
}

/// Reads pkt-lines from the front of a buffer; what follows them (a
/// packfile) stays in `rest`.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// The next line; an error when the buffer ends inside one.
    pub fn next_pkt(&mut self) -> Result<Pkt<'a>, GitError> {
        let head = self
            .buf
            .get(..4)
            .ok_or_else(|| GitError::Malformed("the request ends inside a pkt-line's length".into()))?;
        let len = std::str::from_utf8(head)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| GitError::Malformed("a pkt-line's length is not four hex digits".into()))?;
        let pkt = match len {
            0 => Pkt::Flush,
            1 => Pkt::Delim,
            2 => Pkt::ResponseEnd,
            3 => return Err(GitError::Malformed("a pkt-line has the reserved length 3".into())),
            n if n > MAX_LINE => {
                return Err(GitError::Malformed(format!(
                    "a pkt-line of {n} bytes is over the protocol's {MAX_LINE}"
                )));
            }
            n => {
                let data = self
                    .buf
                    .get(4..n)
                    .ok_or_else(|| GitError::Malformed("the request ends inside a pkt-line".into()))?;
                self.buf = &self.buf[n..];
                return Ok(Pkt::Data(data));
            }
        };
        self.buf = &self.buf[4..];
        Ok(pkt)
    }

    /// What follows the lines read so far.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// One payload as a pkt-line.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut line = format!("{:04x}", payload.len() + 4).into_bytes();
    line.extend_from_slice(payload);
    line
}

/// A line's payload without its one trailing LF, if it has one.
pub fn chomp(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_special_packets_and_the_rest_are_read_in_order() {
        let mut buf = encode(b"hello\n");
        buf.extend_from_slice(b"0000000100020004PACK...");
        let mut r = Reader::new(&buf);
        assert_eq!(r.next_pkt().unwrap(), Pkt::Data(b"hello\n"));
        assert_eq!(r.next_pkt().unwrap(), Pkt::Flush);
        assert_eq!(r.next_pkt().unwrap(), Pkt::Delim);
        assert_eq!(r.next_pkt().unwrap(), Pkt::ResponseEnd);
        assert_eq!(r.next_pkt().unwrap(), Pkt::Data(b""));
        assert_eq!(r.rest(), b"PACK...");
        assert_eq!(chomp(b"a\n"), b"a");
        assert_eq!(chomp(b"a"), b"a");
    }

    #[test]
    fn truncated_reserved_oversized_and_non_hex_lengths_are_malformed() {
        for bad in [&b"00"[..], b"0003", b"000ahi", b"fff0", b"00g5x", b"+004", b"ffff"] {
            let mut r = Reader::new(bad);
            assert!(matches!(r.next_pkt(), Err(GitError::Malformed(_))), "{bad:?}");
        }
    }
}
