//! Send-time rewriting, just before DKIM signing: CSS inlining ([`css`]), link rewriting
//! ([`links`]), the open pixel ([`pixel`]), `List-Unsubscribe` ([`unsubscribe`]), over the
//! MIME tree ([`mime`]) with charsets and transfer encodings done right ([`encode`]).
//!
//! The work is split in two. Per distinct body (cached by a hash of the bytes, the account
//! and the options, [`cache`]) the message is parsed, inlined and link-scanned once, into a
//! [`Prepared`] message: its final bytes with places for the recipient token. Per recipient
//! only that token is made (one HMAC, [`token`]) and copied into the places. The tracking
//! URLs use the customer's tracking domain when the From domain is a verified sender domain
//! of the message's account, else `[tracking] default_host`.

pub mod cache;
pub mod css;
pub mod encode;
pub mod links;
pub mod mime;
pub mod pixel;
pub mod token;
pub mod unsubscribe;

use crate::domains::cache::DomainCache;
use encode::{Piece, Seg, Transfer};
use herald_schemas::{MessageAccepted, SendOptions, Timestamp};
use std::borrow::Cow;

/// Settings of rewriting (`[tracking]` in the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tracking (links, pixel, unsubscribe) is on; CSS inlining works either way.
    pub tracking: bool,
    /// `https` (or `http` for tests).
    pub scheme: String,
    /// Host of tracking URLs when the From domain is no verified sender domain of the account.
    pub default_host: String,
    /// Rewrite links in `text/plain` parts too.
    pub rewrite_text: bool,
    pub keys: token::Keys,
    /// Bytes of prepared bodies kept.
    pub cache_bytes: usize,
}

/// A message prepared for its recipients: final bytes with places for the token.
#[derive(Debug)]
pub struct Prepared {
    pub pieces: Vec<Piece>,
    pub bind: [u8; token::BIND],
    /// The tracking base URL the pieces use (`https://clicks.example.com`).
    pub base: String,
    pub from_domain: Option<String>,
    /// What was done, for the attempt event (`css, 12 links, pixel, list-unsubscribe`).
    pub note: String,
}

impl Prepared {
    /// Bytes held (for the cache bound).
    pub fn size(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len(),
                Piece::Base64 { window, .. } => window.len() * 8 + 32,
                _ => 8,
            })
            .sum::<usize>()
            + 128
    }

    /// The message for one recipient token.
    pub fn fill(&self, token: &str) -> Vec<u8> {
        let len: usize =
            self.pieces.iter().map(|p| if let Piece::Bytes(b) = p { b.len() } else { token.len() + 8 }).sum();
        let mut out = Vec::with_capacity(len + 64);
        for p in &self.pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Slot => out.extend_from_slice(token.as_bytes()),
                Piece::QpSlot => encode::qp_slot(token, &mut out),
                Piece::Base64 { window, crlf } => encode::base64_window(window, token, &mut out, *crlf),
            }
        }
        out
    }

    fn has_slots(&self) -> bool {
        self.pieces.iter().any(|p| !matches!(p, Piece::Bytes(_)))
    }
}

/// The rewritten message and what was done.
pub struct Rewritten<'a> {
    pub data: Cow<'a, [u8]>,
    /// `None` when nothing was asked.
    pub note: Option<String>,
}

pub struct Rewriter {
    settings: Settings,
    domains: Option<DomainCache>,
    cache: cache::Cache,
    inliner: css_inline::CSSInliner<'static>,
}

impl Rewriter {
    pub fn new(settings: Settings, domains: Option<DomainCache>) -> Self {
        let cache = cache::Cache::new(settings.cache_bytes);
        Rewriter { settings, domains, cache, inliner: css::inliner() }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The options that take effect (tracking ones only while tracking is on).
    fn effective(&self, o: SendOptions) -> SendOptions {
        let t = self.settings.tracking;
        SendOptions {
            inline_css: o.inline_css,
            click_tracking: o.click_tracking && t,
            opens_tracking: o.opens_tracking && t,
            list_unsubscribe: o.list_unsubscribe && t,
            bounce_tracking: false,
        }
    }

    /// The tracking base URL for a message of `account` from `from_domain`.
    pub fn base(&self, account: &herald_schemas::AccountId, from_domain: Option<&str>) -> String {
        let host = from_domain
            .zip(self.domains.as_ref())
            .and_then(|(from, cache)| {
                let ascii = idna::domain_to_ascii(from).unwrap_or_else(|_| from.to_owned());
                let snapshot = cache.current();
                let state = snapshot.domains.get(&ascii)?;
                (state.account == *account && state.is_verified()).then(|| state.tracking_domain())
            })
            .unwrap_or_else(|| self.settings.default_host.clone());
        format!("{}://{host}", self.settings.scheme)
    }

    /// Rewrites `body` (the bytes of `msg` as delivered) for `msg`'s recipient.
    pub fn rewrite<'a>(&self, msg: &MessageAccepted, body: &'a [u8]) -> Rewritten<'a> {
        let now = (Timestamp::now().millis() / 1000).clamp(0, u32::MAX as i64) as u32;
        self.rewrite_at(msg, body, now)
    }

    /// [`Rewriter::rewrite`] with tokens issued at `issued_at` (Unix seconds).
    pub fn rewrite_at<'a>(&self, msg: &MessageAccepted, body: &'a [u8], issued_at: u32) -> Rewritten<'a> {
        let options = self.effective(msg.options);
        if !options.rewrites() {
            return Rewritten { data: Cow::Borrowed(body), note: None };
        }
        let flags = options.inline_css as u8
            | (options.click_tracking as u8) << 1
            | (options.opens_tracking as u8) << 2
            | (options.list_unsubscribe as u8) << 3
            | (self.settings.rewrite_text as u8) << 4;
        let key = cache::Key { hash: xxhash_rust::xxh3::xxh3_128(body), account: msg.account.0.clone(), flags };
        let bind = bind(&key);
        let (prepared, hit) = self.cache.get(
            key,
            |p| p.base == self.base(&msg.account, p.from_domain.as_deref()),
            || {
                metrics::counter!("herald_rewrite_bodies_prepared_total").increment(1);
                self.prepare(msg, body, options, bind)
            },
        );
        if hit {
            metrics::counter!("herald_rewrite_cache_hits_total").increment(1);
        }
        metrics::counter!("herald_rewrite_messages_total").increment(1);
        if !prepared.has_slots() && prepared.pieces.len() == 1 {
            if let Piece::Bytes(b) = &prepared.pieces[0] {
                return Rewritten { data: Cow::Owned(b.clone()), note: Some(prepared.note.clone()) };
            }
        }
        let claims = token::Claims {
            key_id: String::new(),
            account: msg.account.0.clone(),
            message_id: msg.message_id.0.clone(),
            recipient: msg.recipient.clone(),
            issued_at,
            bind: prepared.bind,
        };
        let token = token::recipient_token(&self.settings.keys, &claims);
        Rewritten { data: Cow::Owned(prepared.fill(&token)), note: Some(prepared.note.clone()) }
    }

    /// The per-body work: everything but the recipient token.
    pub fn prepare(
        &self,
        msg: &MessageAccepted,
        body: &[u8],
        options: SendOptions,
        bind: [u8; token::BIND],
    ) -> Prepared {
        let unchanged = |note: &str, from_domain: Option<String>, base: String| Prepared {
            pieces: vec![Piece::Bytes(body.to_vec())],
            bind,
            base,
            from_domain,
            note: note.to_owned(),
        };
        let Some(layout) = mime::layout(body) else {
            metrics::counter!("herald_rewrite_skipped_total", "reason" => "unparsable").increment(1);
            return unchanged("not rewritten: unparsable MIME", None, self.base(&msg.account, None));
        };
        let base = self.base(&msg.account, layout.from_domain.as_deref());
        let job = Job { options, base: &base, bind: &bind, account: &msg.account.0, layout: &layout };
        let mut edits = Vec::new();
        let mut done = Done::default();
        for target in &layout.targets {
            if let Some(e) = self.part(body, target, &job, &mut done) {
                edits.extend(e);
            }
        }
        if options.list_unsubscribe {
            if layout.list_unsubscribe.is_none() {
                let raw = encode::to_raw(&unsubscribe::header(&base), encode::Charset::Utf8, false);
                let pieces = encode::transfer(raw, Transfer::Identity { seven_bit: true }, true);
                edits.push(mime::Edit { range: layout.header_end..layout.header_end, pieces });
                done.notes.push("list-unsubscribe".into());
            } else {
                done.notes.push("list-unsubscribe: the message has its own".into());
            }
        }
        let note = if done.notes.is_empty() { "nothing to rewrite".to_owned() } else { done.notes.join(", ") };
        Prepared {
            pieces: mime::splice(body, edits),
            bind,
            base: base.clone(),
            from_domain: layout.from_domain.clone(),
            note: format!("rewritten: {note}"),
        }
    }

    /// The edits of one part, or `None` when it stays as it is.
    fn part(&self, body: &[u8], target: &mime::Target, job: &Job<'_>, done: &mut Done) -> Option<Vec<mime::Edit>> {
        let skipped = |reason: &'static str| {
            metrics::counter!("herald_rewrite_skipped_total", "reason" => reason).increment(1);
            None
        };
        let Some(decoded) = target.decoded(body) else { return skipped("bad_transfer_encoding") };
        let Some((charset, text)) = encode::Charset::detect(target.charset.as_deref(), &decoded) else {
            return skipped("charset");
        };
        let o = job.options;
        let skip = job.layout.list_unsubscribe.clone().unwrap_or_default();
        let (html, rewritten) = match target.kind {
            mime::Kind::Html => {
                let mut text = Cow::Borrowed(text.as_str());
                if o.inline_css && css::has_styles(&text) {
                    match css::inline(&self.inliner, &text) {
                        Ok(inlined) => {
                            text = Cow::Owned(inlined);
                            done.note("css");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "CSS inlining failed; styles left in <style>");
                            metrics::counter!("herald_rewrite_skipped_total", "reason" => "css").increment(1);
                        }
                    }
                }
                let html_job = links::HtmlJob { track_links: o.click_tracking, pixel: o.opens_tracking, skip: &skip };
                match links::rewrite_html(&text, &html_job) {
                    Ok(r) => (true, r),
                    Err(e) if matches!(text, Cow::Owned(_)) => {
                        tracing::warn!(error = %e, "link rewriting failed; CSS inlined only");
                        (true, links::Rewritten { pieces: vec![links::Piece::Text(text.into_owned())], urls: vec![] })
                    }
                    Err(_) => return skipped("html"),
                }
            }
            mime::Kind::Text if o.click_tracking && self.settings.rewrite_text => {
                (false, links::rewrite_text(&text, &skip))
            }
            mime::Kind::Text => {
                (false, links::Rewritten { pieces: vec![links::Piece::Text(text.clone())], urls: vec![] })
            }
        };
        let segs = self.segments(&rewritten, job, done);
        if segs.len() == 1 && segs[0] == Seg::Text(text.clone()) || segs.is_empty() && text.is_empty() {
            return None; // nothing changed: the part keeps its exact bytes
        }
        let raw = encode::to_raw(&segs, charset, html);
        let slot_max = token::max_len(job.account.len());
        let how = match target.encoding {
            mail_parser::Encoding::Base64 => Transfer::Base64,
            mail_parser::Encoding::QuotedPrintable => Transfer::QuotedPrintable,
            mail_parser::Encoding::None if encode::identity_fits(&raw, target.seven_bit, slot_max) => {
                Transfer::Identity { seven_bit: target.seven_bit }
            }
            mail_parser::Encoding::None => Transfer::QuotedPrintable,
        };
        let mut edits = vec![mime::Edit {
            range: target.body.clone(),
            pieces: encode::transfer(raw, how, target.ends_with_crlf(body)),
        }];
        if how == Transfer::QuotedPrintable && target.encoding == mail_parser::Encoding::None {
            let field = Piece::Bytes(b"Content-Transfer-Encoding: quoted-printable\r\n".to_vec());
            let range = target.cte_field.clone().unwrap_or(target.header_end..target.header_end);
            edits.push(mime::Edit { range, pieces: vec![field] });
        }
        Some(edits)
    }

    /// Tracking URLs around the token places, and the unsubscribe placeholder expanded.
    fn segments(&self, rewritten: &links::Rewritten, job: &Job<'_>, done: &mut Done) -> Vec<Seg> {
        let mut segs = Vec::new();
        let text = |t: &str, segs: &mut Vec<Seg>| {
            if job.options.list_unsubscribe {
                unsubscribe::expand(t, job.base, segs);
            } else {
                segs.push(Seg::Text(t.to_owned()));
            }
        };
        for piece in &rewritten.pieces {
            match piece {
                links::Piece::Text(t) => text(t, &mut segs),
                links::Piece::Link(i) => {
                    let l =
                        token::link_token(&self.settings.keys, job.account, job.bind, *i as u32, &rewritten.urls[*i]);
                    segs.push(Seg::Text(format!("{}/c/", job.base)));
                    segs.push(Seg::Slot);
                    segs.push(Seg::Text(format!(".{l}")));
                }
                links::Piece::Pixel => {
                    let (before, after) = pixel::html(job.base);
                    segs.push(Seg::Text(before));
                    segs.push(Seg::Slot);
                    segs.push(Seg::Text(after.to_owned()));
                    done.note("pixel");
                }
            }
        }
        if !rewritten.urls.is_empty() {
            done.links += rewritten.urls.len();
            done.notes.retain(|n| !n.ends_with(" links"));
            done.notes.push(format!("{} links", done.links));
        }
        // Merge neighbouring text so "nothing changed" is one segment.
        let mut merged: Vec<Seg> = Vec::with_capacity(segs.len());
        for s in segs {
            match (merged.last_mut(), s) {
                (Some(Seg::Text(prev)), Seg::Text(t)) => prev.push_str(&t),
                (_, s) => merged.push(s),
            }
        }
        merged
    }
}

/// What the parts of one message share while being prepared.
struct Job<'a> {
    options: SendOptions,
    base: &'a str,
    bind: &'a [u8; token::BIND],
    account: &'a str,
    layout: &'a mime::Layout,
}

#[derive(Default)]
struct Done {
    notes: Vec<String>,
    links: usize,
}

impl Done {
    fn note(&mut self, what: &str) {
        if !self.notes.iter().any(|n| n == what) {
            self.notes.push(what.to_owned());
        }
    }
}

/// Ties link tokens to one prepared body: bytes of its cache key.
/// `s` as HTML text or a quoted attribute value: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bind(key: &cache::Key) -> [u8; token::BIND] {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(
        &[key.hash.to_le_bytes().as_slice(), &[key.flags]].concat(),
        0x6865_7261_6c64,
    );
    let mut out = [0u8; token::BIND];
    out.copy_from_slice(&h.to_le_bytes()[..token::BIND]);
    out
}
