//! The SMTP server state machine, without I/O: command lines in, replies out.
//!
//! The driver ([`super::serve_connection`]) reads bounded lines and hands them to
//! [`Session::line`]; what needs the outside world (checking a recipient, taking in
//! a message) comes back as a [`Step`] for the driver to do. [`DataReader`] reads the
//! DATA phase the same way: dot-unstuffing, the size limit and the line limit.
//!
//! One machine serves both listeners: bounce intake ([`Session::new`]: no TLS, no AUTH)
//! and mail submission ([`Session::submission`], RFC 6409): STARTTLS, AUTH PLAIN and
//! LOGIN only once the connection is TLS (RFC 4954 §4), and no transaction before the
//! client is authenticated or trusted. The secret of an AUTH exchange is handed to the
//! driver in a [`Secret`], which never prints, and is quoted in no reply.

use base64::Engine as _;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest text line in DATA, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;

/// One SMTP reply; `lines` are joined with `code-` continuation markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// The reply as sent: `250-first\r\n250 last\r\n`.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            // A reply line never carries a bare CR or LF from the text it quotes.
            let clean: String = line.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            out.push_str(&format!("{}{sep}{clean}\r\n", self.code));
        }
        out
    }

    /// Whether the text (first line) starts with this, for tests.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Limits of one session.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_recipients: u32,
    /// Bad commands before the session is closed with 421.
    pub max_errors: u32,
    /// Commands that bring no message closer (NOOP, RSET, EHLO/HELO, VRFY, HELP) since
    /// the last message taken in, before the session is closed with 421: a client
    /// cannot hold a connection by chatting.
    pub max_unproductive_commands: u32,
}

/// What a submission session offers and requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubmitMode {
    /// STARTTLS is offered (the listener has a certificate and the connection is not TLS).
    pub starttls: bool,
    /// The connection is TLS (implicit, or after STARTTLS): AUTH is offered.
    pub tls: bool,
    /// The client's address is one of a tenant's trusted networks: no AUTH needed.
    pub trusted: bool,
}

/// A password from an AUTH exchange: shown as `<secret>` by `Debug`, so no log line or
/// panic message prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this reply and read the next command.
    Reply(Reply),
    /// Check this `RCPT TO` address, then call [`Session::rcpt_checked`].
    CheckRcpt(String),
    /// Send this 354 reply, read the message with a [`DataReader`], then call
    /// [`Session::take_transaction`].
    ReadData(Reply),
    /// Send this reply and close the connection.
    Close(Reply),
    /// Send this 220, drop any input the client sent after STARTTLS (RFC 3207 §4.2:
    /// none may be acted on), do the TLS handshake, then call [`Session::tls_started`].
    StartTls(Reply),
    /// Check these credentials, then call [`Session::auth_checked`].
    Authenticate { user: String, password: Secret },
}

/// Where an AUTH exchange stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthWait {
    /// No exchange.
    None,
    /// `AUTH PLAIN` without an initial response: the next line is the response.
    Plain,
    /// `AUTH LOGIN`: the next line is the user name.
    LoginUser,
    /// `AUTH LOGIN`: the next line is the password.
    LoginPassword(String),
}

/// A complete transaction: what DATA delivers to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction<T> {
    /// Empty for the null sender `<>` (what bounces come from).
    pub mail_from: String,
    pub rcpts: Vec<(String, T)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before EHLO/HELO.
    Connected,
    /// Greeted, no transaction.
    Ready,
    /// MAIL given; RCPTs being collected.
    Mail,
}

/// One SMTP session; `T` is what a checked recipient resolves to.
#[derive(Debug)]
pub struct Session<T> {
    hostname: String,
    limits: Limits,
    phase: Phase,
    mail_from: String,
    rcpts: Vec<(String, T)>,
    errors: u32,
    /// Unproductive commands since the last message.
    idle: u32,
    /// `Some` for a submission session.
    submit: Option<SubmitMode>,
    authenticated: bool,
    auth: AuthWait,
}

impl<T> Session<T> {
    pub fn new(hostname: &str, limits: Limits) -> Session<T> {
        Session {
            hostname: hostname.to_owned(),
            limits,
            phase: Phase::Connected,
            mail_from: String::new(),
            rcpts: Vec::new(),
            errors: 0,
            idle: 0,
            submit: None,
            authenticated: false,
            auth: AuthWait::None,
        }
    }

    /// A mail submission session (see the module doc).
    pub fn submission(hostname: &str, limits: Limits, mode: SubmitMode) -> Session<T> {
        Session {
            submit: Some(mode),
            ..Session::new(hostname, limits)
        }
    }

    pub fn greeting(&self) -> Reply {
        let what = if self.submit.is_some() {
            "mail submission"
        } else {
            "bounce intake"
        };
        Reply::new(220, format!("{} ESMTP Sluice {what}", self.hostname))
    }

    /// Whether the client may start a transaction: always for bounce intake; for
    /// submission once authenticated, or from a trusted network.
    fn may_send(&self) -> bool {
        match self.submit {
            None => true,
            Some(m) => m.trusted || self.authenticated,
        }
    }

    /// The driver finished the TLS handshake after [`Step::StartTls`]: the session starts
    /// over (RFC 3207 §4.2: the client greets again), now over TLS.
    pub fn tls_started(&mut self) {
        self.reset();
        self.phase = Phase::Connected;
        if let Some(m) = &mut self.submit {
            m.tls = true;
            m.starttls = false;
        }
    }

    /// The driver's verdict on [`Step::Authenticate`]: `Err` is the reply refusing it (a
    /// 421 closes the session).
    pub fn auth_checked(&mut self, verdict: Result<(), Reply>) -> Step {
        match verdict {
            Ok(()) => {
                self.authenticated = true;
                Step::Reply(Reply::new(235, "2.7.0 authentication succeeded"))
            }
            Err(reply) if reply.code == 421 => Step::Close(reply),
            Err(reply) => self.error(reply),
        }
    }

    /// A line of an AUTH exchange (a base64 response, or `*` to cancel).
    fn auth_response(&mut self, line: &str) -> Step {
        let wait = std::mem::replace(&mut self.auth, AuthWait::None);
        if line == "*" {
            return self.error(Reply::new(501, "5.0.0 authentication cancelled"));
        }
        let Some(decoded) = decode_base64(line) else {
            return self.error(Reply::new(501, "5.5.2 cannot decode the AUTH response"));
        };
        match wait {
            AuthWait::None => unreachable!("only called while an exchange waits"),
            AuthWait::Plain => self.plain(&decoded),
            AuthWait::LoginUser => match String::from_utf8(decoded) {
                Ok(user) => {
                    self.auth = AuthWait::LoginPassword(user);
                    // "Password:"
                    Step::Reply(Reply::new(334, "UGFzc3dvcmQ6"))
                }
                Err(_) => self.error(Reply::new(501, "5.5.2 the user name is not UTF-8")),
            },
            AuthWait::LoginPassword(user) => match String::from_utf8(decoded) {
                Ok(password) => Step::Authenticate {
                    user,
                    password: Secret(password),
                },
                Err(_) => self.error(Reply::new(501, "5.5.2 the password is not UTF-8")),
            },
        }
    }

    /// A decoded `AUTH PLAIN` response: `authzid NUL authcid NUL password` (RFC 4616).
    /// An authorisation identity other than the user's own is refused: a key acts for
    /// its own tenant only.
    fn plain(&mut self, decoded: &[u8]) -> Step {
        let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
        let [authz, user, password] = parts.as_slice() else {
            return self.error(Reply::new(501, "5.5.2 malformed AUTH PLAIN response"));
        };
        let (Ok(authz), Ok(user), Ok(password)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(user),
            std::str::from_utf8(password),
        ) else {
            return self.error(Reply::new(
                501,
                "5.5.2 the AUTH PLAIN response is not UTF-8",
            ));
        };
        if !authz.is_empty() && authz != user {
            return self.error(Reply::new(
                535,
                "5.7.8 authorization identity must be empty or the user name",
            ));
        }
        Step::Authenticate {
            user: user.to_owned(),
            password: Secret(password.to_owned()),
        }
    }

    /// `AUTH mechanism [initial-response]` (submission only).
    fn auth(&mut self, arg: &str) -> Step {
        let Some(mode) = self.submit else {
            return self.error(Reply::new(502, "5.5.1 AUTH is not implemented"));
        };
        if !mode.tls {
            return self.error(Reply::new(
                538,
                "5.7.11 encryption required for requested authentication mechanism: \
                 send STARTTLS first",
            ));
        }
        match self.phase {
            Phase::Connected => {
                return self.error(Reply::new(503, "5.5.1 send EHLO first"));
            }
            Phase::Mail => {
                return self.error(Reply::new(
                    503,
                    "5.5.1 AUTH is not allowed during a mail transaction",
                ));
            }
            Phase::Ready => {}
        }
        if self.authenticated {
            return self.error(Reply::new(503, "5.5.1 already authenticated"));
        }
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((m, rest)) => (m, Some(rest.trim())),
            None => (arg, None),
        };
        match (mechanism.to_ascii_uppercase().as_str(), initial) {
            ("PLAIN", None) => {
                self.auth = AuthWait::Plain;
                Step::Reply(Reply::new(334, ""))
            }
            ("PLAIN", Some(ir)) => match decode_base64(ir) {
                Some(decoded) => self.plain(&decoded),
                None => self.error(Reply::new(501, "5.5.2 cannot decode the AUTH response")),
            },
            ("LOGIN", None) => {
                self.auth = AuthWait::LoginUser;
                // "Username:"
                Step::Reply(Reply::new(334, "VXNlcm5hbWU6"))
            }
            ("LOGIN", Some(ir)) => {
                self.auth = AuthWait::LoginUser;
                self.auth_response(ir)
            }
            _ => self.error(Reply::new(
                504,
                "5.5.4 unrecognized authentication type: use PLAIN or LOGIN",
            )),
        }
    }

    /// The EHLO reply's lines after the greeting.
    fn extensions(&self) -> Vec<String> {
        let size = format!("SIZE {}", self.limits.max_message_bytes);
        let Some(mode) = self.submit else {
            return vec![
                "PIPELINING".into(),
                size,
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
            ];
        };
        let mut out = vec![
            "PIPELINING".into(),
            size,
            "8BITMIME".into(),
            "SMTPUTF8".into(),
        ];
        if mode.starttls {
            out.push("STARTTLS".into());
        }
        if mode.tls && !self.authenticated {
            out.push("AUTH PLAIN LOGIN".into());
        }
        out.push("ENHANCEDSTATUSCODES".into());
        out
    }

    /// The reply to a timeout: the session ends.
    pub fn timeout(&self) -> Reply {
        Reply::new(421, format!("4.4.2 {} timeout, closing", self.hostname))
    }

    /// The reply when the session has lasted as long as it may: it ends.
    pub fn too_long(&self, max_secs: u64) -> Reply {
        Reply::new(
            421,
            format!(
                "4.4.2 {} session longer than {max_secs} seconds, closing",
                self.hostname
            ),
        )
    }

    /// A command that brings no message closer: counted; too many end the session.
    fn unproductive(&mut self, reply: Reply) -> Step {
        self.idle += 1;
        if self.idle > self.limits.max_unproductive_commands {
            Step::Close(Reply::new(
                421,
                format!(
                    "4.7.0 {} too many commands without a message (limit {}), closing",
                    self.hostname, self.limits.max_unproductive_commands
                ),
            ))
        } else {
            Step::Reply(reply)
        }
    }

    /// A bad command: counted; too many end the session.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= self.limits.max_errors {
            Step::Close(Reply::new(
                421,
                format!("4.7.0 {} too many errors, closing", self.hostname),
            ))
        } else {
            Step::Reply(reply)
        }
    }

    /// The driver read a command line longer than [`MAX_COMMAND_LINE`] (and skipped
    /// the rest of it).
    pub fn line_too_long(&mut self) -> Step {
        self.auth = AuthWait::None;
        self.error(Reply::new(500, "5.5.2 line too long"))
    }

    fn reset(&mut self) {
        self.mail_from.clear();
        self.rcpts.clear();
        if self.phase == Phase::Mail {
            self.phase = Phase::Ready;
        }
    }

    /// One command line (CRLF or LF already stripped or not).
    pub fn line(&mut self, line: &[u8]) -> Step {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        if self.auth != AuthWait::None {
            return self.auth_response(line.trim());
        }
        let (verb, arg) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                if arg.is_empty() {
                    return self.error(Reply::new(
                        501,
                        format!("5.5.4 {verb} needs a domain or address literal"),
                    ));
                }
                self.reset();
                self.phase = Phase::Ready;
                if verb == "HELO" {
                    return self.unproductive(Reply::new(250, self.hostname.clone()));
                }
                let mut lines = vec![format!("{} greets {arg}", self.hostname)];
                lines.extend(self.extensions());
                self.unproductive(Reply { code: 250, lines })
            }
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" => {
                if !arg.is_empty() {
                    return self.error(Reply::new(501, "5.5.4 DATA takes no arguments"));
                }
                match self.phase {
                    Phase::Connected => {
                        self.error(Reply::new(503, "5.5.1 send EHLO or HELO first"))
                    }
                    Phase::Ready => self.error(Reply::new(503, "5.5.1 send MAIL first")),
                    Phase::Mail if self.rcpts.is_empty() => {
                        self.error(Reply::new(554, "5.5.1 no valid recipients"))
                    }
                    Phase::Mail => {
                        Step::ReadData(Reply::new(354, "end data with <CR><LF>.<CR><LF>"))
                    }
                }
            }
            "RSET" => {
                if !arg.is_empty() {
                    return self.error(Reply::new(501, "5.5.4 RSET takes no arguments"));
                }
                self.reset();
                self.unproductive(Reply::new(250, "2.0.0 reset"))
            }
            "NOOP" => self.unproductive(Reply::new(250, "2.0.0 ok")),
            "QUIT" => Step::Close(Reply::new(
                221,
                format!("2.0.0 {} closing connection", self.hostname),
            )),
            "VRFY" => self.unproductive(Reply::new(
                252,
                "2.5.0 cannot verify; a bounce address is checked at RCPT",
            )),
            "HELP" => self.unproductive(Reply::new(
                214,
                "2.0.0 this server takes bounces for its return paths: EHLO, MAIL, RCPT, DATA",
            )),
            "STARTTLS" if self.submit.is_some() => self.starttls(arg),
            "AUTH" => self.auth(arg),
            "STARTTLS" | "BDAT" | "EXPN" | "ETRN" | "TURN" => {
                self.error(Reply::new(502, format!("5.5.1 {verb} is not implemented")))
            }
            _ => self.error(Reply::new(500, "5.5.2 command not recognized")),
        }
    }

    /// `STARTTLS` (submission only).
    fn starttls(&mut self, arg: &str) -> Step {
        let mode = self.submit.unwrap_or_default();
        if mode.tls {
            return self.error(Reply::new(503, "5.5.1 TLS is already active"));
        }
        if !mode.starttls {
            return self.error(Reply::new(502, "5.5.1 STARTTLS is not offered here"));
        }
        if !arg.is_empty() {
            return self.error(Reply::new(501, "5.5.4 STARTTLS takes no arguments"));
        }
        Step::StartTls(Reply::new(220, "2.0.0 ready to start TLS"))
    }

    fn mail(&mut self, arg: &str) -> Step {
        match self.phase {
            Phase::Connected => {
                return self.error(Reply::new(503, "5.5.1 send EHLO or HELO first"));
            }
            Phase::Mail => return self.error(Reply::new(503, "5.5.1 nested MAIL command")),
            Phase::Ready => {}
        }
        if !self.may_send() {
            let how = match self.submit {
                Some(m) if !m.tls => "send STARTTLS, then AUTH",
                _ => "send AUTH",
            };
            return self.error(Reply::new(
                530,
                format!("5.7.0 authentication required: {how}"),
            ));
        }
        let Some((path, params)) = parse_path(arg, "FROM:") else {
            return self.error(Reply::new(501, "5.5.4 syntax: MAIL FROM:<address>"));
        };
        for p in params.split_whitespace() {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.to_ascii_uppercase().as_str() {
                "SIZE" => match v.parse::<u64>() {
                    Ok(n) if n > self.limits.max_message_bytes => {
                        return Step::Reply(Reply::new(
                            552,
                            format!(
                                "5.3.4 message size {n} exceeds the limit of {} bytes",
                                self.limits.max_message_bytes
                            ),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return self.error(Reply::new(501, format!("5.5.4 bad SIZE {v:?}")));
                    }
                },
                "BODY" if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                "BODY" => return self.error(Reply::new(501, format!("5.5.4 bad BODY {v:?}"))),
                // Submission advertises SMTPUTF8; the message is taken as it comes.
                "SMTPUTF8" if self.submit.is_some() && v.is_empty() => {}
                // RFC 4954 §5: an MTA relaying for its own client names it; the key
                // that authenticated this session decides, not the parameter.
                "AUTH" if self.submit.is_some() => {}
                _ => {
                    return self.error(Reply::new(
                        555,
                        format!("5.5.4 unsupported MAIL parameter {k:?}"),
                    ));
                }
            }
        }
        if !path.is_empty() && !path.contains('@') {
            return self.error(Reply::new(
                501,
                format!("5.1.7 bad sender address {path:?}"),
            ));
        }
        self.mail_from = path;
        self.phase = Phase::Mail;
        Step::Reply(Reply::new(250, "2.1.0 sender ok"))
    }

    fn rcpt(&mut self, arg: &str) -> Step {
        match self.phase {
            Phase::Connected => {
                return self.error(Reply::new(503, "5.5.1 send EHLO or HELO first"));
            }
            Phase::Ready => return self.error(Reply::new(503, "5.5.1 send MAIL first")),
            Phase::Mail => {}
        }
        let Some((path, params)) = parse_path(arg, "TO:") else {
            return self.error(Reply::new(501, "5.5.4 syntax: RCPT TO:<address>"));
        };
        if let Some(p) = params.split_whitespace().next() {
            return self.error(Reply::new(
                555,
                format!("5.5.4 unsupported RCPT parameter {p:?}"),
            ));
        }
        if path.is_empty() || !path.contains('@') {
            return self.error(Reply::new(
                501,
                format!("5.1.3 bad recipient address {path:?}"),
            ));
        }
        if self.rcpts.len() >= self.limits.max_recipients as usize {
            return Step::Reply(Reply::new(452, "4.5.3 too many recipients"));
        }
        Step::CheckRcpt(path)
    }

    /// The driver's verdict on a [`Step::CheckRcpt`] address.
    pub fn rcpt_checked(&mut self, address: String, verdict: Result<T, Reply>) -> Step {
        match verdict {
            Ok(target) => {
                self.rcpts.push((address, target));
                Step::Reply(Reply::new(250, "2.1.5 recipient ok"))
            }
            Err(reply) if reply.code >= 500 => self.error(reply),
            Err(reply) => Step::Reply(reply),
        }
    }

    /// After DATA was read: the transaction, and the session is ready for the next.
    pub fn take_transaction(&mut self) -> Transaction<T> {
        let tx = Transaction {
            mail_from: std::mem::take(&mut self.mail_from),
            rcpts: std::mem::take(&mut self.rcpts),
        };
        self.reset();
        // A message came in: the client is doing what the listener is for.
        self.idle = 0;
        tx
    }

    /// After DATA failed (too large, bad lines): the transaction is dropped.
    pub fn abort_transaction(&mut self) {
        self.reset();
    }
}

/// Standard base64 (`=` alone is the empty response, RFC 4954 §4); `None` if it is not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `FROM:<a@b> PARAMS` → (`a@b`, `PARAMS`); a space after the colon is tolerated, a
/// source route (`<@x,@y:a@b>`) is dropped. `None` when it is not a path.
fn parse_path(arg: &str, keyword: &str) -> Option<(String, String)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let mut path = &rest[..end];
    if path.starts_with('@') {
        path = path.split_once(':')?.1;
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some((path.to_owned(), rest[end + 1..].trim().to_owned()))
}

/// How a DATA phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEnd {
    /// The message, dot-unstuffed, lines ending in CRLF.
    Message(Vec<u8>),
    /// Over the size limit; the rest was read and dropped.
    TooLarge,
    /// A line over [`MAX_TEXT_LINE`]; the rest was read and dropped.
    LineTooLong,
}

impl DataEnd {
    /// The reply to a DATA that did not deliver a message.
    pub fn refusal(&self, limit: u64) -> Option<Reply> {
        match self {
            DataEnd::Message(_) => None,
            DataEnd::TooLarge => Some(Reply::new(
                552,
                format!("5.3.4 message exceeds the limit of {limit} bytes"),
            )),
            DataEnd::LineTooLong => Some(Reply::new(
                500,
                format!("5.5.2 message has a line over {MAX_TEXT_LINE} octets"),
            )),
        }
    }
}

/// Collects the DATA phase line by line.
#[derive(Debug)]
pub struct DataReader {
    limit: u64,
    message: Vec<u8>,
    too_large: bool,
    line_too_long: bool,
}

impl DataReader {
    pub fn new(limit: u64) -> DataReader {
        DataReader {
            limit,
            message: Vec::new(),
            too_large: false,
            line_too_long: false,
        }
    }

    /// The driver read a line over [`MAX_TEXT_LINE`] (and skipped the rest of it).
    pub fn long_line(&mut self) {
        self.line_too_long = true;
    }

    /// One line as read (with its LF or CRLF); `Some` when it was the final `.`.
    pub fn line(&mut self, line: &[u8]) -> Option<DataEnd> {
        let body = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if body == b"." {
            let end = if self.line_too_long {
                DataEnd::LineTooLong
            } else if self.too_large {
                DataEnd::TooLarge
            } else {
                DataEnd::Message(std::mem::take(&mut self.message))
            };
            return Some(end);
        }
        if self.too_large || self.line_too_long {
            return None;
        }
        let body = body.strip_prefix(b".").unwrap_or(body);
        if (self.message.len() + body.len() + 2) as u64 > self.limit {
            self.too_large = true;
            self.message = Vec::new();
            return None;
        }
        self.message.extend_from_slice(body);
        self.message.extend_from_slice(b"\r\n");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_with(max_errors: u32) -> Session<u32> {
        Session::new(
            "mx.test",
            Limits {
                max_message_bytes: 1000,
                max_recipients: 2,
                max_errors,
                max_unproductive_commands: 5,
            },
        )
    }

    fn session() -> Session<u32> {
        session_with(50)
    }

    fn code(step: Step) -> u16 {
        match step {
            Step::Reply(r) | Step::Close(r) | Step::ReadData(r) | Step::StartTls(r) => r.code,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_whole_transaction_goes_through_in_order() {
        let mut s = session();
        assert_eq!(s.greeting().code, 220);
        let Step::Reply(ehlo) = s.line(b"EHLO client.test\r\n") else {
            panic!()
        };
        let wire = ehlo.to_wire();
        assert!(
            wire.starts_with("250-mx.test greets client.test\r\n"),
            "{wire}"
        );
        for ext in [
            "250-PIPELINING",
            "250-SIZE 1000",
            "250-8BITMIME",
            "250 ENHANCEDSTATUSCODES",
        ] {
            assert!(wire.contains(ext), "{ext} in {wire}");
        }
        assert_eq!(code(s.line(b"MAIL FROM:<> BODY=8BITMIME SIZE=10")), 250);
        assert_eq!(
            s.line(b"RCPT TO:<bounces+x@b.test>"),
            Step::CheckRcpt("bounces+x@b.test".into())
        );
        assert_eq!(code(s.rcpt_checked("bounces+x@b.test".into(), Ok(7))), 250);
        assert_eq!(code(s.line(b"DATA")), 354);
        let tx = s.take_transaction();
        assert_eq!(tx.mail_from, "");
        assert_eq!(tx.rcpts, vec![("bounces+x@b.test".to_string(), 7)]);
        // Ready for the next transaction, not another DATA.
        assert_eq!(code(s.line(b"DATA")), 503);
        assert_eq!(code(s.line(b"QUIT")), 221);
    }

    #[test]
    fn commands_out_of_sequence_get_503_and_bad_syntax_501() {
        let mut s = session();
        assert_eq!(code(s.line(b"MAIL FROM:<a@b.test>")), 503);
        assert_eq!(code(s.line(b"RCPT TO:<a@b.test>")), 503);
        assert_eq!(code(s.line(b"HELO")), 501);
        assert_eq!(code(s.line(b"helo client")), 250);
        assert_eq!(code(s.line(b"RCPT TO:<a@b.test>")), 503);
        assert_eq!(code(s.line(b"DATA")), 503);
        assert_eq!(code(s.line(b"MAIL FROM a@b.test")), 501);
        assert_eq!(code(s.line(b"mail from: <a@b.test>")), 250);
        assert_eq!(code(s.line(b"MAIL FROM:<a@b.test>")), 503);
        assert_eq!(code(s.line(b"DATA")), 554);
        assert_eq!(code(s.line(b"RCPT TO:<>")), 501);
        assert_eq!(code(s.line(b"RCPT TO:<x@y> NOTIFY=NEVER")), 555);
        assert_eq!(code(s.line(b"RSET")), 250);
        assert_eq!(code(s.line(b"RCPT TO:<a@b.test>")), 503);
    }

    #[test]
    fn size_limits_recipient_limits_and_refused_recipients() {
        let mut s = session();
        s.line(b"EHLO c");
        assert_eq!(code(s.line(b"MAIL FROM:<> SIZE=1001")), 552);
        assert_eq!(code(s.line(b"MAIL FROM:<> SIZE=many")), 501);
        assert_eq!(code(s.line(b"MAIL FROM:<> BODY=BINARYMIME")), 501);
        assert_eq!(code(s.line(b"MAIL FROM:<>")), 250);
        let refused = Reply::new(550, "5.1.1 no such bounce address");
        assert_eq!(code(s.rcpt_checked("x@y".into(), Err(refused))), 550);
        s.rcpt_checked("a@y".into(), Ok(1));
        s.rcpt_checked("b@y".into(), Ok(2));
        assert_eq!(code(s.line(b"RCPT TO:<c@y>")), 452);
        assert_eq!(s.take_transaction().rcpts.len(), 2);
    }

    #[test]
    fn unknown_and_unimplemented_commands_and_too_many_errors() {
        let mut s = session_with(5);
        assert_eq!(code(s.line(b"NOOP")), 250);
        assert_eq!(code(s.line(b"VRFY a@b")), 252);
        assert_eq!(code(s.line(b"STARTTLS")), 502);
        assert_eq!(code(s.line(b"FOO bar")), 500);
        assert_eq!(code(s.line_too_long()), 500);
        assert_eq!(code(s.line(b"")), 500);
        match s.line(b"BAR") {
            Step::Close(r) => assert_eq!(r.code, 421),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chatting_without_a_message_ends_the_session_and_a_message_resets_the_count() {
        let mut s = session();
        // Five unproductive commands are allowed (EHLO is one), the sixth closes.
        for (line, want) in [
            (&b"EHLO c"[..], 250),
            (b"NOOP", 250),
            (b"RSET", 250),
            (b"HELP", 214),
            (b"VRFY a@b", 252),
        ] {
            assert_eq!(code(s.line(line)), want, "{line:?}");
        }
        match s.line(b"NOOP") {
            Step::Close(r) => {
                assert_eq!(r.code, 421);
                assert!(
                    r.text()
                        .contains("too many commands without a message (limit 5)"),
                    "{r:?}"
                );
            }
            other => panic!("{other:?}"),
        }

        let mut s = session();
        for _ in 0..4 {
            s.line(b"NOOP");
        }
        s.line(b"EHLO c");
        s.line(b"MAIL FROM:<>");
        s.rcpt_checked("a@y".into(), Ok(1));
        s.take_transaction();
        for _ in 0..5 {
            assert_eq!(code(s.line(b"NOOP")), 250, "counted from the message on");
        }
        assert_eq!(code(s.line(b"NOOP")), 421);
    }

    #[test]
    fn data_is_dot_unstuffed_and_bounded() {
        let mut d = DataReader::new(100);
        assert_eq!(d.line(b"Subject: x\r\n"), None);
        assert_eq!(d.line(b"\n"), None);
        assert_eq!(d.line(b"..leading dot\r\n"), None);
        assert_eq!(
            d.line(b".\r\n"),
            Some(DataEnd::Message(
                b"Subject: x\r\n\r\n.leading dot\r\n".to_vec()
            ))
        );

        let mut d = DataReader::new(20);
        d.line(b"0123456789\r\n");
        d.line(b"0123456789\r\n");
        assert_eq!(d.line(b".\n"), Some(DataEnd::TooLarge));
        assert_eq!(DataEnd::TooLarge.refusal(20).unwrap().code, 552);

        let mut d = DataReader::new(100);
        d.long_line();
        d.line(b"short\r\n");
        assert_eq!(d.line(b"."), Some(DataEnd::LineTooLong));
    }

    fn submission(mode: SubmitMode) -> Session<u32> {
        Session::submission(
            "mx.test",
            Limits {
                max_message_bytes: 1000,
                max_recipients: 2,
                max_errors: 50,
                max_unproductive_commands: 50,
            },
            mode,
        )
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn submission_offers_auth_only_over_tls_and_asks_for_it_before_mail() {
        let mut s = submission(SubmitMode {
            starttls: true,
            ..SubmitMode::default()
        });
        let Step::Reply(ehlo) = s.line(b"EHLO c") else {
            panic!()
        };
        let wire = ehlo.to_wire();
        assert!(
            wire.contains("STARTTLS") && wire.contains("SMTPUTF8"),
            "{wire}"
        );
        assert!(!wire.contains("AUTH"), "{wire}");
        assert_eq!(
            code(s.line(format!("AUTH PLAIN {}", b64("\0t\0k")).as_bytes())),
            538
        );
        assert_eq!(code(s.line(b"MAIL FROM:<a@b.test>")), 530);
        assert!(matches!(s.line(b"STARTTLS"), Step::StartTls(r) if r.code == 220));
        s.tls_started();
        assert_eq!(
            code(s.line(b"MAIL FROM:<a@b.test>")),
            503,
            "EHLO again first"
        );
        let Step::Reply(ehlo) = s.line(b"EHLO c") else {
            panic!()
        };
        let wire = ehlo.to_wire();
        assert!(
            wire.contains("AUTH PLAIN LOGIN") && !wire.contains("STARTTLS"),
            "{wire}"
        );
        assert_eq!(code(s.line(b"STARTTLS")), 503);
        assert_eq!(code(s.line(b"MAIL FROM:<a@b.test>")), 530);
        assert_eq!(code(s.line(b"AUTH CRAM-MD5")), 504);
        let step = s.line(format!("AUTH PLAIN {}", b64("\0t\0sk_secret")).as_bytes());
        assert_eq!(
            step,
            Step::Authenticate {
                user: "t".into(),
                password: Secret("sk_secret".into())
            }
        );
        assert!(!format!("{step:?}").contains("sk_secret"), "Debug hides it");
        assert_eq!(code(s.auth_checked(Err(Reply::new(535, "5.7.8 no")))), 535);
        assert_eq!(code(s.line(b"AUTH LOGIN")), 334);
        assert_eq!(code(s.line(b64("t").as_bytes())), 334);
        assert!(matches!(
            s.line(b64("pw").as_bytes()),
            Step::Authenticate { user, password } if user == "t" && password.0 == "pw"
        ));
        assert_eq!(code(s.auth_checked(Ok(()))), 235);
        assert_eq!(code(s.line(b"AUTH PLAIN")), 503);
        assert_eq!(code(s.line(b"MAIL FROM:<a@b.test> SMTPUTF8 AUTH=<>")), 250);
        assert_eq!(code(s.line(b"AUTH PLAIN")), 503, "not inside a transaction");
    }

    #[test]
    fn an_auth_exchange_can_be_cancelled_and_a_421_verdict_closes() {
        let mut s = submission(SubmitMode {
            tls: true,
            ..SubmitMode::default()
        });
        s.line(b"EHLO c");
        assert_eq!(code(s.line(b"AUTH PLAIN")), 334);
        assert_eq!(code(s.line(b"*")), 501);
        assert_eq!(code(s.line(b"AUTH PLAIN")), 334);
        assert_eq!(code(s.line(b"not base64!")), 501);
        assert_eq!(code(s.line(b"NOOP")), 250, "back to commands");
        assert!(matches!(
            s.auth_checked(Err(Reply::new(421, "4.7.0 too many"))),
            Step::Close(_)
        ));
        let mut trusted = submission(SubmitMode {
            trusted: true,
            ..SubmitMode::default()
        });
        trusted.line(b"EHLO c");
        assert_eq!(code(trusted.line(b"MAIL FROM:<a@b.test>")), 250);
    }

    #[test]
    fn multi_line_replies_mark_continuations_and_drop_line_breaks() {
        let r = Reply {
            code: 250,
            lines: vec!["a".into(), "b\r\nX".into()],
        };
        assert_eq!(r.to_wire(), "250-a\r\n250 bX\r\n");
    }
}
