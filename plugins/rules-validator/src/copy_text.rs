//! PostgreSQL's COPY text format, the form the host streams rows in: one value's escapes
//! undone (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`, `\NNN` octal, `\xHH`).

/// Decodes one (non-NULL) value into `out`, replacing what it held.
pub fn decode(value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        i += 1;
        if b != b'\\' || i == value.len() {
            out.push(b);
            continue;
        }
        let c = value[i];
        i += 1;
        match c {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut n = u32::from(c - b'0');
                for _ in 0..2 {
                    match value.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(n as u8);
            }
            b'x' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match value.get(i).and_then(|&d| hex(d)) {
                    Some(first) => {
                        i += 1;
                        let mut n = first;
                        if let Some(second) = value.get(i).and_then(|&d| hex(d)) {
                            n = n * 16 + second;
                            i += 1;
                        }
                        out.push(n as u8);
                    }
                    None => out.push(b'x'),
                }
            }
            other => out.push(other), // `\\` and any other escaped character stand for themselves
        }
    }
}
