//! Just enough MIME to find the parts of a bounce: headers with folding,
//! multipart bodies by boundary, and the fields of a delivery-status part.

/// One MIME entity: its unfolded headers and its raw body.
#[derive(Debug)]
pub struct Part {
    headers: Vec<(String, String)>,
    pub body: String,
}

/// Decodes bytes as UTF-8 (lossy) and turns CRLF and lone CR into LF.
pub fn normalize(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\r', "\n")
}

/// Parses `name: value` lines with continuation lines, up to the first blank line.
pub fn parse_fields(text: &str) -> (Vec<(String, String)>, &str) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut rest = "";
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        let l = line.trim_end_matches('\n');
        if l.trim().is_empty() {
            rest = &text[offset..];
            break;
        }
        if l.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(l.trim());
            }
        } else if let Some((name, value)) = l.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        rest = &text[offset..];
    }
    (fields, rest)
}

impl Part {
    pub fn parse(text: &str) -> Part {
        let (headers, body) = parse_fields(text);
        Part {
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_else(|| "text/plain".into())
            .to_ascii_lowercase()
    }

    fn boundary(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        let lower = ct.to_ascii_lowercase();
        let at = lower.find("boundary=")? + "boundary=".len();
        let raw = &ct[at..];
        let value = match raw.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or(""),
            None => raw.split([';', ' ']).next().unwrap_or(""),
        };
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// Sub-parts of a multipart body (empty for a leaf).
    pub fn children(&self) -> Vec<Part> {
        let Some(boundary) = self.boundary() else {
            return Vec::new();
        };
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut current: Option<String> = None;
        for line in self.body.split('\n') {
            if line.starts_with(&delimiter) {
                if let Some(p) = current.take() {
                    parts.push(Part::parse(&p));
                }
                if line.trim_end().ends_with("--") && line.trim_end().len() == delimiter.len() + 2 {
                    break;
                }
                current = Some(String::new());
            } else if let Some(p) = current.as_mut() {
                p.push_str(line);
                p.push('\n');
            }
        }
        if let Some(p) = current {
            parts.push(Part::parse(&p));
        }
        parts
    }

    /// The first part, depth first, whose content type starts with `wanted`.
    pub fn find_content_type(&self, wanted: &str) -> Option<Part> {
        if self.content_type().starts_with(wanted) {
            return Some(Part {
                headers: self.headers.clone(),
                body: self.body.clone(),
            });
        }
        self.children()
            .into_iter()
            .find_map(|c| c.find_content_type(wanted))
    }

    /// The text of every leaf, in order (for bounces without a DSN part).
    pub fn all_text(&self) -> String {
        let children = self.children();
        if children.is_empty() {
            return self.body.clone();
        }
        children
            .iter()
            .map(Part::all_text)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Field groups of a delivery-status body after the per-message group:
/// one map per recipient.
pub fn dsn_recipients(body: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut rest = body.trim_start_matches('\n');
    while !rest.trim().is_empty() {
        let (fields, after) = parse_fields(rest);
        if after.len() == rest.len() {
            break;
        }
        if !fields.is_empty() {
            groups.push(fields);
        }
        rest = after.trim_start_matches('\n');
    }
    groups
        .into_iter()
        .filter(|g| {
            g.iter()
                .any(|(n, _)| n == "final-recipient" || n == "original-recipient")
        })
        .collect()
}

/// `TOKEN` of a `bounces+TOKEN@domain` address.
pub fn verp_token(to: &str) -> Option<String> {
    let addr = to
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(to)
        .trim();
    let local = addr.split_once('@')?.0;
    let token = local.split_once('+')?.1;
    (!token.is_empty()).then(|| token.to_owned())
}

/// The `Message-ID` of the returned message, from its headers part.
pub fn original_message_id(message: &Part) -> Option<String> {
    let returned = message
        .find_content_type("text/rfc822-headers")
        .or_else(|| message.find_content_type("message/rfc822"))?;
    let (fields, _) = parse_fields(returned.body.trim_start_matches('\n'));
    fields
        .into_iter()
        .find(|(n, _)| n == "message-id")
        .map(|(_, v)| v)
}
