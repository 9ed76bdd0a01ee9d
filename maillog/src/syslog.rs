//! The header of a syslog line: timestamp, host, program, then the message.

use super::syslog_time::{CLASSIC_LEN, Clock, parse_classic, parse_rfc3339};

/// A syslog line split into its parts (borrowed from the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub ms: i64,
    pub host: &'a [u8],
    /// The tag without `[pid]` and `:`, e.g. `postfix/smtpd` or `qmail`.
    pub program: &'a [u8],
    pub msg: &'a [u8],
}

/// Splits `TIMESTAMP HOST PROGRAM[PID]: MESSAGE`; the timestamp is classic
/// (`May  1 04:40:40`) or RFC 3339.
pub fn parse_header<'a>(line: &'a [u8], clock: &mut Clock) -> Option<Header<'a>> {
    let (ms, rest) = match parse_classic(line) {
        Some(t) => (clock.resolve(&t), line.get(CLASSIC_LEN + 1..)?),
        None => {
            let sp = memchr::memchr(b' ', line)?;
            (parse_rfc3339(&line[..sp])?, &line[sp + 1..])
        }
    };
    let (host, rest) = split_word(rest)?;
    let (tag, msg) = split_word(rest)?;
    let tag = tag.strip_suffix(b":")?;
    let program = match memchr::memchr(b'[', tag) {
        Some(i) => &tag[..i],
        None => tag,
    };
    Some(Header {
        ms,
        host,
        program,
        msg,
    })
}

/// The first space-separated word and what follows its space.
fn split_word(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b' ', b)?;
    (i > 0).then(|| (&b[..i], &b[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::YearRule;

    #[test]
    fn classic_and_rfc3339_headers() {
        let mut c = Clock::new(YearRule::Start(2007), 0);
        let h = parse_header(
            b"May  1 04:40:40 saracen qmail: 1177980040.0 new msg 1",
            &mut c,
        )
        .unwrap();
        assert_eq!((h.host, h.program), (&b"saracen"[..], &b"qmail"[..]));
        assert_eq!(h.msg, b"1177980040.0 new msg 1");
        let h = parse_header(
            b"2023-03-14T00:08:35.948639+01:00 helga postfix/qmgr[3163066]: 4PbC4x469Jz3tBr: removed",
            &mut c,
        )
        .unwrap();
        assert_eq!(h.program, b"postfix/qmgr");
        assert_eq!(h.msg, b"4PbC4x469Jz3tBr: removed");
        assert!(parse_header(b"# failJSON: { }", &mut c).is_none());
    }
}
