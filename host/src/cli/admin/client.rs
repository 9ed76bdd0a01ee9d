//! The admin API as the CLI calls it: the server's URL (`--url` / `SLUICE_URL`), the
//! admin token from `SLUICE_ADMIN_TOKEN` only (a flag would show it in `ps` and shell
//! history), path segments percent-encoded, and an answer other than 2xx turned into
//! an error naming the request, the status and the API's error code and message.
//!
//! The token is never printed: it is held in a [`Token`] whose `Debug` hides it, goes
//! only into the `Authorization` header, and no error message is built from it.

use crate::cli::UsageError;
use crate::cli::http;
use anyhow::{Context, Result};
use serde_json::Value;

/// Where the admin token is read from.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// The longest token taken: the server's tokens are some 40 characters; anything far
/// longer is not a token (and would make a request head the server refuses).
const MAX_TOKEN_BYTES: usize = 1024;

/// The admin token; `Debug` does not show it.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The token from [`TOKEN_ENV`]; errors say what is wrong with it, never what it is.
    pub fn from_env() -> Result<Token> {
        let raw = match std::env::var(TOKEN_ENV) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(UsageError(format!(
                    "{TOKEN_ENV} is not set: the admin commands read the admin token from it \
                     (`sluice serve` printed it on first start; `sluice serve \
                     --reset-admin-token` makes a new one)"
                ))
                .into());
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(UsageError(format!("{TOKEN_ENV} is not valid UTF-8")).into());
            }
        };
        Token::new(raw)
    }

    fn new(raw: String) -> Result<Token> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(UsageError(format!("{TOKEN_ENV} is empty")).into());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(UsageError(format!(
                "{TOKEN_ENV} is {} bytes long (at most {MAX_TOKEN_BYTES}): not an admin token",
                token.len()
            ))
            .into());
        }
        // It goes into a header line as it is: no line breaks, no spaces, nothing a
        // header cannot carry.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UsageError(format!(
                "{TOKEN_ENV} holds spaces, control or non-ASCII characters: not an admin token"
            ))
            .into());
        }
        Ok(Token(token.to_owned()))
    }
}

/// A non-2xx answer of the API: what was asked, the status and the API's
/// `{"error": {"code", "message", "field"?}}` (or the start of a body that is not that).
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: HTTP {status} {code}: {message}{field}{hint}")]
pub struct ApiFailure {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    /// `" (field: NAME)"` when the API named one.
    field: String,
    hint: &'static str,
}

impl ApiFailure {
    fn new(method: &str, path: &str, status: u16, body: &[u8]) -> ApiFailure {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = &v["error"];
        let (code, message) = match (e["code"].as_str(), e["message"].as_str()) {
            (Some(c), Some(m)) => (clean(c, 64), clean(m, 500)),
            _ => (
                "no_api_error".to_owned(),
                format!(
                    "the answer is not an API error: {:?}",
                    clean(&String::from_utf8_lossy(body), 200)
                ),
            ),
        };
        let field = e["field"]
            .as_str()
            .map(|f| format!(" (field: {})", clean(f, 64)))
            .unwrap_or_default();
        let hint = match status {
            401 => "; is SLUICE_ADMIN_TOKEN this server's admin token?",
            _ => "",
        };
        ApiFailure {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            code,
            message,
            field,
            hint,
        }
    }
}

/// `s` safe to print on a terminal and bounded: what a server says is not trusted to
/// hold no escape sequences.
fn clean(s: &str, max_chars: usize) -> String {
    super::table::cell_text(s, max_chars)
}

/// A call's 2xx answer: its body, parsed when it is JSON.
pub struct Answer {
    /// The body as the API sent it (what `--json` prints).
    pub raw: Vec<u8>,
    /// The body parsed; `Null` for an empty body (a 204).
    pub json: Value,
}

/// The admin API of one server.
#[derive(Debug)]
pub struct Client {
    url: String,
    /// Whether `--url` or `SLUICE_URL` named the server (else it is the default).
    given: bool,
    token: Token,
}

impl Client {
    pub fn new(url: Option<String>, token: Token) -> Client {
        match url {
            Some(url) => Client {
                url,
                given: true,
                token,
            },
            None => Client {
                url: http::DEFAULT_URL.to_owned(),
                given: false,
                token,
            },
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn get(&self, path: &str) -> Result<Answer> {
        self.call("GET", path, None)
    }

    /// One call; `body` is sent as JSON. A 2xx is an [`Answer`], anything else an
    /// [`ApiFailure`]; a server not reached names the URL tried.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
        let bytes = body.map(Value::to_string).unwrap_or_default();
        let resp = http::request(
            method,
            &self.url,
            path,
            &self.token.0,
            "application/json",
            bytes.as_bytes(),
        )
        .with_context(|| http::calling(&self.url, self.given))?;
        if !(200..300).contains(&resp.status) {
            return Err(ApiFailure::new(method, path, resp.status, &resp.body).into());
        }
        let json = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body).with_context(|| {
                format!(
                    "{method} {path}: HTTP {} but the answer is not JSON: {:?}",
                    resp.status,
                    clean(&String::from_utf8_lossy(&resp.body), 200)
                )
            })?
        };
        Ok(Answer {
            raw: resp.body,
            json,
        })
    }
}

/// One path segment (an id given on the command line) percent-encoded: whatever it
/// holds (`/`, `?`, spaces, line breaks) it stays one segment of the request line.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_break_out_of_the_path() {
        assert_eq!(seg("relay-1"), "relay-1");
        assert_eq!(seg("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(seg("x\r\nHost: y"), "x%0D%0AHost:%20y");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn tokens_that_cannot_be_a_header_are_refused_without_being_quoted() {
        for bad in ["secret b", "secret\r\nX-Evil: 1", "tök-secret"] {
            let e = Token::new(bad.to_owned()).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
        assert!(Token::new("  ".to_owned()).is_err());
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert!(
            !Token::new(long.clone())
                .unwrap_err()
                .to_string()
                .contains(&long)
        );
        assert!(Token::new(" adm-123 \n".to_owned()).is_ok());
        assert_eq!(format!("{:?}", Token("secret".into())), "Token(…)");
    }

    #[test]
    fn api_errors_name_status_code_message_and_field() {
        let e = ApiFailure::new(
            "PATCH",
            "/admin/v1/relays/r",
            422,
            br#"{"error":{"code":"invalid","message":"must be at least 1","field":"connection_limit"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "PATCH /admin/v1/relays/r: HTTP 422 invalid: must be at least 1 (field: connection_limit)"
        );
        let e = ApiFailure::new("GET", "/x", 502, b"<html>\x1b[31mbad gateway</html>");
        let s = e.to_string();
        assert!(s.contains("HTTP 502 no_api_error"), "{s}");
        assert!(!s.contains('\x1b'), "{s}");
        let e = ApiFailure::new(
            "GET",
            "/x",
            401,
            br#"{"error":{"code":"unauthorized","message":"m"}}"#,
        );
        assert!(e.to_string().contains("SLUICE_ADMIN_TOKEN"));
    }
}
