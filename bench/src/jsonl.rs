//! Reads back the flat JSON objects that `report::Obj` writes (one per
//! line, values: strings, numbers, booleans, null), so the parent process
//! can rebuild its tables from the lines its children print.

/// One value of a flat object.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A parsed line: the fields in order.
#[derive(Clone, Debug, Default)]
pub struct Line(Vec<(String, Val)>);

impl Line {
    #[must_use]
    pub fn get(&self, k: &str) -> Option<&Val> {
        self.0.iter().find(|(name, _)| name == k).map(|(_, v)| v)
    }

    /// A string field (`""` if absent or not a string).
    #[must_use]
    pub fn str(&self, k: &str) -> &str {
        match self.get(k) {
            Some(Val::Str(s)) => s,
            _ => "",
        }
    }

    /// A string field, `None` if absent, null or not a string.
    #[must_use]
    pub fn opt_str(&self, k: &str) -> Option<&str> {
        match self.get(k) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A number field, `None` if absent, null or not a number.
    #[must_use]
    pub fn num(&self, k: &str) -> Option<f64> {
        match self.get(k) {
            Some(Val::Num(v)) => Some(*v),
            _ => None,
        }
    }

    /// A non-negative integer field.
    #[must_use]
    pub fn int(&self, k: &str) -> Option<u64> {
        self.num(k).filter(|v| *v >= 0.0).map(|v| v as u64)
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.s.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.at)?;
            self.at += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex =
                                std::str::from_utf8(self.s.get(self.at..self.at + 4)?).ok()?;
                            self.at += 4;
                            let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn value(&mut self) -> Option<Val> {
        self.ws();
        let rest = self.s.get(self.at..)?;
        for (word, v) in [
            (&b"true"[..], Val::Bool(true)),
            (b"false", Val::Bool(false)),
            (b"null", Val::Null),
        ] {
            if rest.starts_with(word) {
                self.at += word.len();
                return Some(v);
            }
        }
        if rest.first() == Some(&b'"') {
            return self.string().map(Val::Str);
        }
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
            .count();
        let v = std::str::from_utf8(&rest[..len]).ok()?.parse().ok()?;
        self.at += len;
        Some(Val::Num(v))
    }
}

/// Parses one flat object; `None` if the line is not one.
#[must_use]
pub fn parse(line: &str) -> Option<Line> {
    let mut c = Cursor {
        s: line.as_bytes(),
        at: 0,
    };
    c.eat(b'{')?;
    let mut fields = Vec::new();
    if c.eat(b'}').is_none() {
        loop {
            let k = c.string()?;
            c.eat(b':')?;
            fields.push((k, c.value()?));
            if c.eat(b',').is_some() {
                continue;
            }
            c.eat(b'}')?;
            break;
        }
    }
    c.ws();
    (c.at == c.s.len()).then_some(Line(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Obj;

    #[test]
    fn reads_back_what_obj_writes() {
        let s = Obj::default()
            .str("type", "group")
            .str("esc", "a\"b\\c\nd\u{1}é")
            .int("ops", 1_000_000)
            .num("secs", 1.5e-3)
            .num("nan", f64::NAN)
            .bool("ok", true)
            .null("wrong")
            .finish();
        let l = parse(&s).unwrap();
        assert_eq!(l.str("type"), "group");
        assert_eq!(l.str("esc"), "a\"b\\c\nd\u{1}é");
        assert_eq!(l.int("ops"), Some(1_000_000));
        assert_eq!(l.num("secs"), Some(1.5e-3));
        assert_eq!(l.get("nan"), Some(&Val::Null));
        assert_eq!(l.get("ok"), Some(&Val::Bool(true)));
        assert_eq!(l.opt_str("wrong"), None);
        assert!(parse("{}").is_some());
        assert!(parse("{\"a\":1").is_none());
        assert!(parse("{\"a\":1} x").is_none());
        assert!(parse("progress 50%").is_none());
        assert!(parse("{\"a\":tru}").is_none());
    }
}
