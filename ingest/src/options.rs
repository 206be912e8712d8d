//! Per-message options, whatever the way in: the account's defaults (`[[accounts]] defaults`),
//! then an `X-Herald-Options` header in the message (`clicktracking=1, openstracking=0`),
//! which Herald removes before storing the message, then (REST only) the request's fields.
//! Names are the REST fields': `inlinizecss`, `clicktracking`, `openstracking`,
//! `bouncetracking`, `listunsubscribe`.

use herald_schemas::SendOptions;

/// The header Herald reads options from (and removes).
pub const HEADER: &str = "X-Herald-Options";

/// Options set explicitly; the rest come from below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub inline_css: Option<bool>,
    pub click_tracking: Option<bool>,
    pub opens_tracking: Option<bool>,
    pub bounce_tracking: Option<bool>,
    pub list_unsubscribe: Option<bool>,
}

impl Overrides {
    /// These overrides on top of `base`.
    pub fn over(&self, base: SendOptions) -> SendOptions {
        SendOptions {
            inline_css: self.inline_css.unwrap_or(base.inline_css),
            click_tracking: self.click_tracking.unwrap_or(base.click_tracking),
            opens_tracking: self.opens_tracking.unwrap_or(base.opens_tracking),
            bounce_tracking: self.bounce_tracking.unwrap_or(base.bounce_tracking),
            list_unsubscribe: self.list_unsubscribe.unwrap_or(base.list_unsubscribe),
        }
    }

    /// Sets option `name` (a REST field name); `Err` names what is wrong.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let slot = match name.trim().to_ascii_lowercase().as_str() {
            "inlinizecss" => &mut self.inline_css,
            "clicktracking" => &mut self.click_tracking,
            "openstracking" => &mut self.opens_tracking,
            "bouncetracking" => &mut self.bounce_tracking,
            "listunsubscribe" => &mut self.list_unsubscribe,
            other => return Err(format!("unknown option `{other}`")),
        };
        *slot = Some(parse_bool(value).ok_or_else(|| format!("`{}` must be a boolean, not `{value}`", name.trim()))?);
        Ok(())
    }
}

/// `true`/`false` and their usual spellings.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Removes every `X-Herald-Options` field from the header section of `body` (CRLF line
/// endings) and returns what they set, in order. `Err` says what is wrong with them.
pub fn take_header(body: Vec<u8>) -> Result<(Vec<u8>, Overrides), String> {
    let end = crate::message::check::header_end(body.as_slice()).unwrap_or(body.len());
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < end {
        let line_end = body[at..end].windows(2).position(|w| w == b"\r\n").map(|p| at + p + 2).unwrap_or(end);
        let line = &body[at..line_end];
        let named = line.len() > HEADER.len()
            && line[HEADER.len()] == b':'
            && line[..HEADER.len()].eq_ignore_ascii_case(HEADER.as_bytes());
        if named {
            fields.push((at, line_end));
        } else if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = fields.last_mut().filter(|f| f.1 == at) {
                last.1 = line_end; // a folded continuation of the field
            }
        }
        at = line_end;
    }
    if fields.is_empty() {
        return Ok((body, Overrides::default()));
    }
    let mut overrides = Overrides::default();
    for &(start, stop) in &fields {
        let value = String::from_utf8_lossy(&body[start + HEADER.len() + 1..stop]).replace("\r\n", "");
        for item in value.split([',', ';']).map(str::trim).filter(|s| !s.is_empty()) {
            let (name, v) = item.split_once('=').ok_or_else(|| format!("{HEADER}: `{item}` is not name=value"))?;
            overrides.set(name, v).map_err(|e| format!("{HEADER}: {e}"))?;
        }
    }
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for (start, stop) in fields {
        out.extend_from_slice(&body[from..start]);
        from = stop;
    }
    out.extend_from_slice(&body[from..]);
    Ok((out, overrides))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_read_and_removed() {
        let body = b"From: a@b.test\r\nX-Herald-Options: clicktracking=1,\r\n openstracking=yes; inlinizecss=0\r\nSubject: s\r\n\
x-herald-options: listunsubscribe=true\r\n\r\nX-Herald-Options: in the body stays\r\n"
            .to_vec();
        let (out, o) = take_header(body).unwrap();
        assert_eq!(out, b"From: a@b.test\r\nSubject: s\r\n\r\nX-Herald-Options: in the body stays\r\n");
        assert_eq!(
            o,
            Overrides {
                inline_css: Some(false),
                click_tracking: Some(true),
                opens_tracking: Some(true),
                bounce_tracking: None,
                list_unsubscribe: Some(true),
            }
        );
        let base = SendOptions { inline_css: true, bounce_tracking: true, ..SendOptions::default() };
        let merged = o.over(base);
        assert!(!merged.inline_css && merged.bounce_tracking && merged.click_tracking && merged.list_unsubscribe);
    }

    #[test]
    fn bad_headers_are_refused_with_a_reason() {
        let err = |h: &str| {
            take_header(format!("From: a@b.test\r\nX-Herald-Options: {h}\r\n\r\nx").into_bytes()).unwrap_err()
        };
        assert!(err("clicktracking=maybe").contains("must be a boolean"));
        assert!(err("colors=1").contains("unknown option `colors`"));
        assert!(err("clicktracking").contains("not name=value"));
        let (same, o) = take_header(b"From: a@b.test\r\n\r\nbody".to_vec()).unwrap();
        assert_eq!((same.as_slice(), o), (&b"From: a@b.test\r\n\r\nbody"[..], Overrides::default()));
    }
}
