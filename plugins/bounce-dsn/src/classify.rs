//! From a diagnostic text, an enhanced status, a reply code and the SMTP
//! command to Sisimai's reason, hard/soft, and the status Sisimai reports.
//!
//! The rules follow Sisimai's `Reason::*` modules: the text decides first
//! (servers send a generic 5.0.0 or 5.7.1 with a telling text), in a fixed
//! order so that the most specific class wins; then the status code; then
//! the DSN action. A bounce without any status gets Sisimai's pseudo status
//! `X.0.9NN` for its reason, so statuses compare with the reference.
//!
//! Where an RFC decides otherwise than Sisimai, the RFC wins: an unknown
//! mailbox at an unnamed SMTP step is `userunknown` (RFC 3463 X.1.1), not
//! `filtered` (the corpus' labels follow this, `tests/data/bounces/README.md`);
//! RFC 7505's X.7.27 is the sender refused; a refused TCP connection is no
//! answer from the host (X.4.1), not a block list (these two are scored
//! against Sisimai's labels as they are).

use crate::phrase;
use sluice_sdk::bounce::Reason;
use std::cell::OnceCell;

/// Phrases (lower case) per reason, in the order they are tried.
const TEXT_RULES: &[(Reason, &[&str])] = &[
    (
        Reason::Mailboxfull,
        &[
            "mailbox exceeds allowed size",
            "exceeds allowed size",
            "account is exceeding their quota",
            "account is over quota",
            "account is temporarily over quota",
            "boite du destinataire pleine",
            "delivery failed: over quota",
            "disc quota exceeded",
            "disk quota exceeded",
            "diskspace quota",
            "does not have enough space",
            "exceeded storage allocation",
            "exceeding its mailbox quota",
            "full mailbox",
            "inbox is full",
            "is over disk quota",
            "is over quota",
            "mail quota exceeded",
            "mailbox exceeded the local limit",
            "mailbox full",
            "mailbox has exceeded its disk space limit",
            "mailbox is full",
            "mailbox over quota",
            "mailbox quota usage exceeded",
            "mailbox size limit exceeded",
            "maildir over quota",
            "mailfolder is full",
            "no space left on device",
            "not enough disk space",
            "not enough storage space",
            "over the allowed quota",
            "quota exceeded",
            "quota violation",
            "reached disk quota",
            "mailbox would exceed maximum allowed storage",
            "the user's space has been used up",
            "is over quota",
            "over quota",
            "over its quota",
            "over their quota",
            "too much mail data",
            "user has exceeded quota",
            "user has too many messages on the server",
            "user is over the quota",
            "user over quota",
            "user over limit",
            "disk quota",
            "mailbox is full",
            "exceeded its storage quota",
            "out of storage space",
            "mailbox quota",
            "storage quota",
            "quota has been exceeded",
            "has exceeded the quota",
            "exceeds quota",
            "mailbox size limit",
            "user's disk quota",
            "quota full",
            "exceeded storage",
            "storage limit",
            "storage full",
            "over its storage",
            "mailbox size",
        ],
    ),
    (
        Reason::Mesgtoobig,
        &[
            "size limit exceeded",
            "mail size limit",
            "exceeded maximum inbound message size",
            "max message size exceeded",
            "message file too big",
            "message length exceeds administrative limit",
            "message size exceeds",
            // RFC 1870's reply text, and the wording MTAs document for it.
            "exceeds fixed maximum message size",
            "maximum message size",
            "message size limit",
            "message is larger than",
            "exceeds the size limit",
            "message too big",
            "message too large",
            "message is too large",
            "taille limite du message atteinte",
            "exceeds the maximum message size",
            "size of the message exceeds",
            "exceeds size limit",
            "message exceeds maximum size",
            "content-too-long",
            // X.411's diagnostic for a message over a size constraint, and
            // MAPI's name of X.411 content-too-long.
            "size-constraint-violation",
            "content_too_long",
        ],
    ),
    (
        Reason::Exceedlimit,
        &[
            "message header size exceeds limit",
            "the number of recipients exceeds",
            "too many recipients for this message",
        ],
    ),
    (
        Reason::Suspend,
        &[
            "mailbox is frozen",
            "account disabled",
            "account has been disabled",
            "account is disabled",
            "account has been suspended",
            "account is suspended",
            "account is locked",
            "account is inactive",
            "inactive account",
            "email account that you tried to reach is disabled",
            "email account that you tried to reach is inactive",
            "has been disabled or discontinued",
            "mailbox disabled",
            "mailbox currently suspended",
            "mailbox is inactive",
            "mailbox has been blocked due to inactivity",
            "recipient suspended",
            "user suspended",
            "boite du destinataire archivee",
            "this account has been closed",
            "account expired",
            "is not active",
            "has been suspended",
            "temporarily disabled",
            "recipient address is disabled",
            "mailbox is disabled",
            "mailbox has been disabled",
            "account inactive",
            "deactivated",
            "account is expired",
            "account has expired",
        ],
    ),
    (Reason::Hasmoved, &[" has been replaced by "]),
    (
        Reason::Norelaying,
        &[
            "email address is not verified",
            "as a relay",
            "insecure mail relay",
            "is not permitted to relay",
            "not allowed to relay",
            "not an open relay",
            "relay access denied",
            "relay denied",
            "relay not permitted",
            "relaying denied",
            "relaying not allowed",
            "relaying mail to",
            "unable to relay",
            "we don't handle mail for",
            "this system is not configured to relay mail",
            "not a gateway",
            "list of allowed rcpthosts",
            "allowed to be relayed",
        ],
    ),
    (
        Reason::Authfailure,
        &[
            "dmarc check failed",
            "dmarc",
            "bad spf records",
            "dmarc policy",
            "does not pass dmarc",
            "dmarc verification",
            "failed dmarc",
            "spf check: fail",
            "spf fail",
            "spf check failed",
            "sender policy framework",
            "please inspect your spf settings",
            "is not allowed to send mail. spf",
            "does not have authentication information",
            "unauthenticated email",
            "dkim signature",
            "dkim verification",
            "dkim check",
            "not designated permitted sender",
            "spf validation",
            "spf policy",
            "spf=fail",
            "spf: fail",
            "spf softfail",
            "spf=softfail",
            "failed spf",
            "spf verification",
            "dkim=fail",
            "dkim fail",
            "failed dkim",
            "dkim validation",
            "did not pass authentication",
            "authentication checks",
            "either spf or dkim",
            "spf or dkim",
            "fails spf",
            "fails dkim",
            "not pass spf",
            "not pass dkim",
            "sender id check",
            "spf unauthorized",
            "rejected by spf",
            "as permitted sender",
            "spf failure",
            // Google's SMTP error reference, 550 5.7.26: "This mail has been
            // blocked because the sender is unauthenticated."
            "sender is unauthenticated",
            // The default SPF explanation that libspf2, pypolicyd-spf,
            // qmail-spf and Exim's SPF ACL examples put in a refusal ("See
            // http://www.open-spf.org/Why?s=mfrom;id=...", earlier
            // openspf.org/.net and spf.pobox.com/why.html), and RFC 4408's
            // example explanation ("%{i} is not one of %{d}'s designated
            // mail servers"): the sender's SPF record refused the client.
            "open-spf.org/why",
            "openspf.org/why",
            "openspf.net/why",
            "spf.pobox.com/why",
            "designated mail servers",
            // Exchange's Sender ID agent's default rejection response
            // (Set-SenderIdConfig): "550 5.7.1 Sender ID (PRA) Not Permitted".
            "sender id (pra)",
        ],
    ),
    (
        Reason::Userunknown,
        &[
            "recipient address rejected",
            "address couldn't be found",
            "couldn't be found",
            "#5.1.1 bad address",
            "address does not exist",
            "address unknown",
            "address not found",
            "archived recipient",
            "bad destination mailbox address",
            "bad recipient address",
            "bad-mailbox",
            "can't accept user",
            "destination addresses were unknown",
            "destination server rejected recipients",
            "email address does not exist",
            "email address could not be found",
            "email account that you tried to reach does not exist",
            "invalid address",
            "invalid mailbox",
            "invalid recipient",
            "invalid final delivery userid",
            "is not a known user",
            "is not a valid mailbox",
            "is not an active address",
            "mailbox does not exist",
            "mailbox invalid",
            "mailbox is unavailable",
            "mailbox not present",
            "mailbox not found",
            "mailbox unavailable",
            "no account by that name",
            "no existe dicha persona",
            "no existe ese usuario",
            "no mail box available for this user",
            "no mailbox by that name",
            "no mailbox found",
            "no mailbox here by that name",
            "no such address",
            "no such mailbox",
            "no such person",
            "no such recipient",
            "no such user",
            "no such local user",
            "no valid recipients",
            "not a valid recipient",
            "not a valid user",
            "not found in directory",
            "not listed in domino directory",
            "not listed in public name & address book",
            "not known at this site",
            "recipient address rejected: user unknown",
            "recipient address rejected: unknown user",
            "recipient address rejected: undeliverable address",
            "recipient address rejected: invalid user",
            "recipient does not exist",
            "recipient is not local",
            "recipient not exist",
            "recipient not found",
            "recipient unknown",
            "recipient rejected",
            "requested action not taken: mailbox unavailable",
            "resolver.adr.recipnotfound",
            "resolver.adr.recipientnotfound",
            "sorry, user unknown",
            "sorry, badrcptto",
            "sorry, no mailbox",
            "the user's email name is not found",
            "there is no one at this address",
            "this address no longer accepts mail",
            "this recipient is in my badrecipientto list",
            "this recipient is not in my validrcptto list",
            "unknown local part",
            // Exim's router: `unknown local-part "x" in domain "y"`.
            "unknown local-part",
            "unknown mailbox",
            "unknown recipient",
            "unknown user",
            "user does not exist",
            "user doesn't exist",
            "user doesn't have a",
            "user not exist",
            "user not found",
            "user not known",
            "user unknown",
            "utilisateur inconnu",
            "invalid or unknown virtual user",
            "vdelivermail: user does not exist",
            "account does not exist",
            "no such account",
            "does not exist",
            "doesn't exist",
            "mailbox is not available",
            "address is invalid",
            "address rejected",
            "unknown address",
            "nessun utente",
            "adresse inconnue",
            "unbekannt",
            "unknown or illegal alias",
            "addressee unknown",
            "invalid user",
            "user invalid",
            "unknown account",
            "account unknown",
            "nonexistent user",
            "non-existent user",
            "non existent user",
            "does not have an account",
            "unknown e-mail address",
            "unknown email address",
            "mailbox unknown",
            "recipient invalid",
            "user is unknown",
            "mailbox name not allowed",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "because the recipient is only accepting mail from specific email addresses",
            "bounced address",
            "due to extended inactivity new mail is not currently being accepted",
            "has restricted sms e-mail",
            "is not accepting any mail",
            "refused due to recipient preferences",
            "rejected by recipient's filtering",
            "this account is protected by",
            "user refuses to receive this mail",
            "user reject",
            "refuse to receive mail",
            "you have been blocked by the recipient",
        ],
    ),
    (
        Reason::Requireptr,
        &[
            "ip name lookup failed",
            "all mail servers must have a ptr record",
            "bad dns ptr resource record",
            "cannot find your hostname",
            "cannot find your reverse hostname",
            "fix reverse dns",
            "no ptr record found",
            "please get a custom reverse dns name",
            "ptr record setup",
            "reverse dns failed",
            "reverse dns required",
            "reverse dns lookup",
            "reverse lookup rejected",
            "does not have a ptr record",
            "forward dns entry does not point to the sending ip",
            "with no reverse dns",
            "unresolvable relay host name",
            "generic dns ptr-records",
            "your ip has no ptr",
            "client host rejected: cannot find",
            "rdns",
            "reverse dns",
            "ptr record",
            "no reverse",
            "reverse hostname",
            "reverse address",
            "ptr",
            "reverse lookup",
            "no hostname",
        ],
    ),
    (
        Reason::Notcompliantrfc,
        &[
            "this message is not rfc 5322 compliant",
            "rfcmessagenoncompliant",
            "multiple addresses in from",
            "not compliant with rfc",
            // Exchange Online's NDR reference, 5.7.512.
            "rfc 5322 section 3.6.2 compliant",
        ],
    ),
    (
        Reason::Badreputation,
        &[
            "a poor email reputation score",
            "rate limited due to ip reputation",
            "ip/domain reputation problems",
            "due to the very low reputation",
            "none/bad reputation",
            "poor reputation",
            "low reputation",
            "sender reputation",
            "bad reputation",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "access denied",
            "temporarily deferred due to unexpected volume or user complaints",
            "access denied (in reply to mail from command)",
            "batv failed to verify",
            "batv validation failure",
            "backscatter protection detected an invalid or expired email address",
            "bogus mail from",
            "connections not accepted from servers without a valid sender domain",
            "denied [bouncedeny]",
            "delivery not authorized, message refused",
            "domain of sender address",
            "email address is on senderfilterconfig list",
            "emetteur invalide",
            "empty envelope senders not allowed",
            "error: no third-party dsns",
            "from: domain is invalid",
            "fully qualified email address required",
            "invalid sender",
            "is not a registered gateway user",
            "mail from not owned by user",
            "mailfrom domain is listed in spamhaus",
            "null sender is not allowed",
            "returned mail not accepted here",
            "sender address has been blacklisted",
            "sender email address rejected",
            "sender is in my badmailfrom list",
            "sender is spammer",
            "sender not pre-approved",
            "sender rejected",
            "sender domain is empty",
            "sender verify failed",
            "sender address rejected",
            "server does not accept mail from",
            "the message has been rejected by batv defense",
            "unroutable sender address",
            "you are not allowed to post to this mailing list",
            "you are not a member of this mailing list",
            "your email address has been blacklisted",
            "your access to submit messages to this e-mail system has been rejected",
            "sender address is not",
            // Sendmail's check_mail ruleset (cf/m4/proto.m4): "553 Domain
            // name required for sender address <x>".
            "domain name required for sender address",
            // AT&T/BellSouth's published block messages: "550 [permfail]
            // bellsouth.net requires valid sender domain".
            "requires valid sender domain",
            "rejected by the recipient domain",
        ],
    ),
    (
        Reason::Hostunknown,
        &[
            "domain does not exist",
            "domain is not reachable",
            "domain must exist",
            "host or domain name not found",
            "host unknown",
            "unknown host",
            "mail domain mentioned in email address is unknown",
            "name or service not known",
            "no such domain",
            "unknown domain",
            "recipient domain must exist",
            "the account or domain may not exist",
            "unrouteable address",
            "unrouteable mail domain",
            "domain not found",
            "no valid recipients were found",
            "dns lookup failed",
            "point to non-existent hosts",
            "could not be found in domain name service",
            "destination email system is unknown or invalid",
            "illegal host/domain name",
            "couldn't find any host named",
            "host not found",
            // RFC 1035 4.1.1 RCODE 3 "Name Error": "the domain name
            // referenced in the query does not exist" (RFC 8020: nor does
            // anything under it); resolvers and Gmail's notices call it
            // NXDOMAIN, Gmail's "DNS Error: Domain name not found".
            "nxdomain",
            "domain name not found",
            // Google's SMTP error reference, 553 5.1.2: "We weren't able to
            // find the recipient domain."
            "able to find the recipient domain",
        ],
    ),
    (
        Reason::Virusdetected,
        &[
            "potentially executable attachment",
            "contains prohibited virus",
            "has been used by recent viruses",
            "virus detected",
            "virus found",
            "infected with a virus",
            "contains a virus",
            "malware detected",
            "virus",
        ],
    ),
    (
        Reason::Spamdetected,
        &[
            "content rejected",
            "blacklisted url in message",
            "block for spam",
            "no spam please",
            "blocked by spamassassin",
            "classified as spam",
            "content filter rejection",
            "identified this email as a bulk email",
            "denied due to spam list",
            "high probability of spam",
            "detected your message as spam",
            "mail appears to be unsolicited",
            "mail content denied",
            "message considered as spam",
            "message contains spam",
            "seems to be a spam",
            "message detected as spam",
            "message filtered",
            "message flagged as spam",
            "message looks like spam",
            "rejected because of unacceptable content",
            "suspected spam",
            "mailmarshal spamprofiler",
            "probable spam",
            "reject bulk.advertising",
            "spamassassin score",
            "rejected - spam",
            "rejecting banned content",
            "rejecting mail content",
            "spam-like characteristics",
            "spam filter",
            "spam check",
            "spam content",
            "spam detected",
            "spam email",
            "spam message",
            "spam not accepted",
            "spam refused",
            "spam rejection",
            "spam score",
            "spambouncer identified spam",
            "spamming not allowed",
            "too much spam",
            "detected as spam",
            "rejected by spam filter",
            "classification as bulk mail",
            "looked like spam",
            "appears to be spam",
            "identified as spam",
            "this message scored",
            "recurrent pattern detection system",
            "we dont accept spam",
            "similar to spam",
            "uribl",
            "is considered spam",
            "is probably spam",
            "as spam",
            "spam block",
            "may contain the spam",
            "antispam checks",
            "spam classification",
            "scored as spam",
            // Google's SMTP error reference, 550 5.7.1: "Our system has
            // detected that this message is likely unsolicited mail."
            "likely unsolicited mail",
            // Microsoft's support article 3024906 (Exchange Online
            // Protection): "550 5.7.1 Message rejected due to content
            // restrictions" is the recipient's anti-spam product matching
            // its spam signatures; also the Exchange content filter
            // agent's rejection response (Set-ContentFilterConfig).
            "due to content restrictions",
            // SpamAssassin's default report template (`report` lines of
            // its default preferences): "Spam detection software ... has
            // identified this incoming email as possible spam", then
            // "Content analysis details: (N points, M required)".
            "as possible spam",
            "content analysis details",
            // RFC 2505's names for spam (UBE, "unsolicited bulk e-mail";
            // UCE, "unsolicited commercial e-mail"), as anti-spam gateways
            // write them out.
            "unsolicited bulk",
            "unsolicited commercial",
        ],
    ),
    (
        Reason::Speeding,
        &[
            "please try again slower",
            "receiving mail at a rate that prevents additional messages",
            "exceeded the rate",
        ],
    ),
    (
        Reason::Toomanyconn,
        &[
            "frequency limited",
            "at maximum connection limit",
            "connection rate limit exceeded",
            "connection limit for",
            "max emails per hour",
            "daily message quota exceeded",
            "maximum sending rate exceeded",
            "too many connections",
            // Sendmail's conncontrol (cf/m4/proto.m4): "452 4.3.2 Too many
            // open connections."
            "too many open connections",
            "too many concurrent",
            "too many errors from your ip",
            "too many recipients",
            "too many smtp sessions",
            "too many sessions",
            "trop de connexions",
            "too many simultaneous",
            "too much mail from",
            "too many messages from",
            "rate limit",
            "maximum number of connections",
            "concurrent connections",
            "connection count",
        ],
    ),
    (
        Reason::Policyviolation,
        &[
            "host network not allowed",
            "was blocked because its content",
            "an illegal attachment on your message",
            "because the recipient is not accepting mail with",
            "by non-member to a members-only list",
            "closed mailing list",
            "denied by policy",
            "email not accepted for policy reasons",
            "rejected due to security policies",
            "header are not accepted",
            "local policy violation",
            "due to organizational settings",
            "message given low priority",
            "not accepted for policy reasons",
            "rejected due to local policy",
            "messages with multiple addresses",
            "rejected for policy reasons",
            "protocol violation",
            "is not subscribed to this group",
            "rejected by organization policy",
            "contains a banned attachment",
            "we do not accept messages containing",
            "you're using a mass mailer",
            "policy violation",
            "violates our policy",
            "policy reasons",
            "content policy",
            "has a policy that prohibits",
            // Google's SMTP error reference, 550 5.7.1: "The user or domain
            // that you are sending to (or from) has a policy that
            // prohibited the mail that you sent."
            "has a policy that prohibited",
        ],
    ),
    (
        Reason::Securityerror,
        &[
            "account not subscribed to ses",
            "authentication credentials invalid",
            "authentication failure",
            "authentication failed",
            "authentication required",
            "authentication is required",
            "executable files are not allowed in compressed files",
            "insecure mail relay",
            "tls required",
            "tls is required",
            "must issue a starttls command first",
            "unauthenticated senders not allowed",
            "verification failure",
            "you are not authorized to send mail",
            "encryption required",
            "starttls is required",
            "must authenticate",
            "smtp auth",
            "authentication is needed",
            "not authenticated",
            "requires authentication",
            "auth required",
            "starttls",
            "must use tls",
            "secure connection required",
            "encrypted connection",
            "mechanism is too weak",
            "cannot authenticate",
            "password not accepted",
            "password required",
            "invalid credentials",
            "tls negotiation failed",
            "tls handshake",
            "certificate verification failed",
            "certificate verify failed",
            "no shared cipher",
            // RFC 3207's 454 reply.
            "tls not available",
        ],
    ),
    (
        Reason::Contenterror,
        &[
            "duplicate header",
            "improper use of 8-bit data in message header",
            "message header size, or recipient list, exceeds policy limit",
            "message mime complexity exceeds the policy maximum",
            "routing loop detected -- too many received: headers",
            "improperly-formatted binary content",
            "contains invalid mime headers",
            // Exchange Online's NDR reference, 5.6.11: bare line feeds
            // (`SMTPSEND.BareLinefeedsAreIllegal`).
            "barelinefeedsareillegal",
            // ITU-T X.411's diagnostic codes, which X.400 gateways and
            // Exchange's NDRs (MAPI's PR_NDR_DIAG_CODE, `MAPI_DIAG_*`)
            // print: the content's syntax, type, encoding or line length.
            "content-syntax-error",
            "content_syntax_in_error",
            "content-type-not-supported",
            "content_type_unsupported",
            "encoded-information-types-unsupported",
            "eits_unsupported",
            "conversion-impractical",
            "impractical_to_convert",
            "line-too-long",
            "line_too_long",
            "unnecessary base64 encoding",
            "header size exceeds",
            "header error",
            "headers contain",
            "invalid header",
            "data format error",
            "lines too long",
            // RFC 5321 4.5.3.1.6 (line length) and 2.3.8 (bare CR or LF);
            // RFC 6152 (8-bit data to a 7-bit server); RFC 2045 MIME
            // structure; RFC 3463 X.6.x media and conversion texts.
            "line too long",
            "line length exceeded",
            "bare lf",
            "bare linefeed",
            "bare line feed",
            "bare <lf>",
            "bare cr",
            "8-bit data",
            "8bit data",
            "nul character",
            "null character",
            "malformed mime",
            "invalid mime",
            "mime error",
            "media not supported",
            "conversion required",
            "conversion failed",
            "conversion with loss",
            // RFC 5322 structure: the header or the message is not well
            // formed (Gmail's 5.6.0 "Mail message is malformed").
            "message is malformed",
            "malformed message",
            "malformed header",
            "bad header",
            "missing header",
            "missing required header",
            "improperly formatted",
            "not properly formatted",
        ],
    ),
    (
        Reason::Notaccept,
        &[
            "doesn't receive email",
            "does not receive email",
            "returned null mx",
            "does not accept mail",
            "host does not accept mail",
            "mail receiving disabled",
            "no mx record found",
            "no smtp service",
            "null mx",
            "nullmx",
            "does not accept e-mail",
            "not accepting mail",
            "not accept mail",
            "has no mx",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "access from ip address",
            "bad sender ip address",
            "banned sending ip",
            "blacklisted by",
            "blocked by",
            "blocked using",
            "blocked - see",
            "dnsbl",
            "client host rejected",
            "confirm this mail server",
            "connections not accepted from ip addresses",
            "currently sending spam",
            "dynamic/zombied/spam ips blocked",
            "esmtp not accepting connections",
            "extreme bad ip profile",
            "helo command rejected",
            "hosts with dynamic ip",
            "invalid ip for sending mail",
            "is in a black list",
            "is in an rbl",
            "no access from mail server",
            "not currently accepting mail from your ip",
            "is on our block list",
            "please use the smtp server of your isp",
            "rejecting open proxy",
            "sender ip address rejected",
            "server access forbidden by your ip",
            "after initial connection",
            "too many spams from your ip",
            "too many unwanted messages have been sent from the following ip",
            "was blocked by",
            "we do not accept mail from dynamic ips",
            "you are not allowed to connect",
            "your ip address is listed",
            "your network is temporary blacklisted",
            "your server requires confirmation",
            "refused to talk to me",
            "blacklist",
            "blocklist",
            "block list",
            "black list",
            "spamhaus",
            "listed at",
            "listed in",
            "ip address is blocked",
            "ip blocked",
            "has been blocked",
            "not allowed to send mail from",
            "your ip",
            "ip not in whitelist",
            "client blocked",
            "rly:b",
            "dyn:t",
            // Google's SMTP error reference, 550 5.7.1: "The IP you're using
            // to send mail is not authorized to send email directly to our
            // servers. Please use the SMTP relay at your service provider."
            "not authorized to send email directly to our servers",
            // Exchange Online's NDR reference, 5.7.708: "Access denied,
            // traffic not accepted from this IP" (the sending IP's standing).
            "traffic not accepted from this ip",
            // Trend Micro's Email Reputation Services (the MAPS lists of
            // IPs): "Mail from <IP> refused/deferred using Trend Micro Email
            // Reputation database. Please see
            // http://www.mail-abuse.com/cgi-bin/lookup?<IP>".
            "email reputation database",
            "mail-abuse.com/cgi-bin/lookup",
            // Sendmail's FEATURE(`dnsbl') and FEATURE(`rbl') default text
            // (cf/feature/dnsbl.m4): "550 Mail from <IP> refused by
            // blackhole site <list>".
            "refused by blackhole site",
        ],
    ),
    (
        Reason::Expired,
        &[
            "not delivered within",
            "remote host is not responding",
            "could not find a gateway for",
            "delivery attempts will continue to be",
            // Delay notices (RFC 3464 `delayed`) as Sendmail, Postfix, Exim
            // and Exchange word them: the message is still queued.
            "delivery attempts will continue",
            "will continue to try",
            "will keep trying",
            "will be retried",
            "still undelivered",
            "not yet been delivered",
            "delivery has been delayed",
            "delivery is delayed",
            "this is a warning message only",
            "you do not need to resend",
            "delivery time expired",
            "failed to deliver to domain",
            "giving up on",
            "has been delayed",
            "it has not been collected after",
            "message expired",
            "message timed out",
            "retry time not reached for any host after a long failure period",
            "server did not respond",
            "in the queue too long",
            "unable to deliver message after multiple retries",
            "was not reachable within the allowed queue period",
            "could not be delivered for more than",
            "delivery expired",
            "retry timeout exceeded",
            "connection timed out",
            // Refused at the TCP level: no MTA bounces that at once (RFC
            // 5321 4.5.4.1 retries it until the give-up time), so a
            // report of it is the queue's lifetime ended, as for a
            // connection that timed out (RFC 3463 X.4.1 "no answer").
            "connection refused",
            "timed out",
            "time out",
            "timeout",
            "undeliverable for",
            "message has expired",
            "queue lifetime",
            "too long in the queue",
            "been in the queue",
            "maximum delivery time",
            "was not delivered within",
            "could not be delivered within",
            "delivery attempts have failed",
            "retry period",
            "message delayed",
            "delivery delayed",
            "could not be delivered for",
            "cannot send message for",
            "could not send message for",
            "have been failing for a long time",
            "in the time limit specified",
            "maximum-time-expired",
            "maximum time expired",
            "retries exceeded",
            "too many retries",
            "expired after",
            "has not been delivered for",
        ],
    ),
    (
        Reason::Mailererror,
        &[
            "x-unix;",
            "command died with status",
            "command failed:",
            "exit code",
            "exit status",
            "mailer error",
            "pipe to |/",
            "procmail:",
            "unknown mailer error",
            "error in processing. server replied",
            "service unavailable", // Sendmail's local mailer
        ],
    ),
    (
        Reason::Systemfull,
        &[
            "insufficient disk space",
            "mail system full",
            "insufficient system storage",
            "requested mail action aborted: exceeded storage allocation",
        ],
    ),
    (
        Reason::Networkerror,
        &[
            "host not found, try again",
            "wasn't able to establish an smtp connection",
            "could not connect and send the mail to",
            "dns records for the destination computer could not be found",
            "hop count exceeded",
            "host is unreachable",
            "host name lookup failure",
            "mail forwarding loop",
            "malformed name server reply",
            "malformed or unexpected name server reply",
            "maximum forwarding loop count exceeded",
            "message looping",
            "routing loop",
            "no route to host",
            "too many hops",
            // Microsoft SMTP service's DSN text for RFC 3463 X.4.6 (routing
            // loop): "because the message was forwarded more than the
            // maximum allowed times. This could indicate a mail loop."
            "forwarded more than the maximum allowed times",
            // Google's SMTP error reference, 554 5.4.6: "Message exceeded 50
            // hops, this may indicate a mail loop."
            "indicate a mail loop",
            // Exchange 2000/2003's NDR text for X.4.6 (Microsoft's list of
            // Exchange delivery status notifications): "A configuration
            // error in the e-mail system caused the message to bounce
            // between two servers or to be forwarded between two recipients."
            "to bounce between two servers",
            "unable to resolve route",
            "network is unreachable",
            "dns error",
            "dns failure",
            "lost connection",
            "connection reset",
            "connection closed",
            "host lookup did not complete",
            "communications failure",
            "network error",
            "name server timeout",
            "loop-detected",
        ],
    ),
    (
        Reason::Systemerror,
        &[
            "service currently unavailable",
            "transaction failed",
            "aliasing/forwarding loop broken",
            "can't create user output file",
            "could not load drd for domain",
            "internal error",
            "internal server error",
            "interrupted system call",
            "it encountered an error while being processed",
            "it would create a mail loop",
            "local configuration error",
            "local error in processing",
            "loop was found in the mail exchanger",
            "loops back to myself",
            "mail system configuration error",
            "server configuration error",
            "system config error",
            "temporary local problem",
            "timeout waiting for input",
            "system error",
            "local delivery failed",
            "queue file write error",
            "insufficient system resources",
        ],
    ),
    (
        Reason::Syntaxerror,
        &["syntax error", "command unrecognized"],
    ),
];

/// The reason an RFC 3463 status implies on its own, by IANA's registry of
/// enhanced status codes (RFC 3463, 3886, 4468, 4954, 5248, 6531, 6710,
/// 7293, 7372, 7505, 8617, 8689), with the generic `X.0.0` and `X.7.1` left
/// to the text (their words say more than the code; the class alone
/// decides them at the very end, [`from_status_class`]). Where a large
/// provider gives a registered code another meaning, the comment says so.
pub fn from_status(status: &str) -> Option<Reason> {
    let mut p = status.splitn(3, '.');
    let (class, subject, detail) = (p.next()?, p.next()?, p.next()?);
    let permanent = class == "5";
    let r = match (subject, detail) {
        ("0", d) if d.len() == 3 && d.starts_with('9') => return pseudo_reason(d),
        // X.1.0 other address status, X.1.1 bad destination mailbox, X.1.3
        // its syntax, X.1.4 ambiguous.
        ("1", "0" | "1" | "3" | "4") => Reason::Userunknown,
        // X.1.10: RFC 7505's "recipient address has null MX", but
        // Exchange Online's "RecipientNotFound" (its NDR reference) far
        // more often; the words tell them apart ("null MX" is notaccept).
        ("1", "10") => Reason::Userunknown,
        ("1", "2") => Reason::Hostunknown,
        ("1", "6") => Reason::Hasmoved,
        // X.1.7 bad sender's mailbox syntax, X.1.8 bad sender's system.
        ("1", "7" | "8") => Reason::Rejected,
        ("1", "9") if !permanent => Reason::Expired,
        // X.2.0 other mailbox status, X.2.1 mailbox disabled (Sisimai's
        // `filtered`; an X.2.1 whose words say disabled or suspended is
        // `suspend` by the phrase lists).
        ("2", "0" | "1") => Reason::Filtered,
        ("2", "2") => Reason::Mailboxfull,
        ("2", "3") => Reason::Exceedlimit,
        // X.2.4 mailing list expansion problem.
        ("2", "4") => Reason::Systemerror,
        // X.3.0 other mail system status, X.3.3 features not supported,
        // X.3.5 system incorrectly configured.
        ("3", "0" | "3" | "5") => Reason::Systemerror,
        ("3", "1") => Reason::Systemfull,
        ("3", "2") if !permanent => Reason::Toomanyconn,
        ("3", "2") => Reason::Notaccept,
        ("3", "4") => Reason::Mesgtoobig,
        // X.4.0 other network status, X.4.2 bad connection, X.4.6 routing
        // loop; X.4.1 no answer from host (permanent: given up on it).
        ("4", "0" | "2" | "6" | "14") => Reason::Networkerror,
        ("4", "1") if !permanent => Reason::Expired,
        ("4", "1") => Reason::Networkerror,
        // RFC 3463 X.4.7 "delivery time expired", in either class;
        // Exchange Online's 5.4.300 "message expired".
        ("4", "7" | "300") => Reason::Expired,
        // Exchange Online: 5.4.310 the DNS domain does not exist, 5.4.312
        // the DNS query failed, 5.4.316 expired after refused connections.
        ("4", "310") => Reason::Hostunknown,
        ("4", "312") => Reason::Networkerror,
        ("4", "316") => Reason::Expired,
        // X.4.3 directory server failure.
        ("4", "3") => Reason::Systemerror,
        // X.4.4 unable to route.
        ("4", "4") => Reason::Hostunknown,
        // X.4.5 mail system congestion.
        ("4", "5") => Reason::Systemfull,
        // X.5.3 too many recipients.
        ("5", "3") => Reason::Toomanyconn,
        // X.5.0 other protocol status, X.5.1 invalid command, X.5.2 syntax
        // error, X.5.4 invalid arguments, X.5.5 wrong protocol version,
        // X.5.6 authentication exchange line too long (RFC 4954).
        ("5", "0" | "1" | "2" | "4" | "5" | "6") if permanent => Reason::Syntaxerror,
        // X.6.x: the media or content (X.6.7-X.6.10: non-ASCII addresses
        // or headers, RFC 6531).
        ("6", _) => Reason::Contenterror,
        ("7", "0") if permanent => Reason::Securityerror,
        // X.7.2 list expansion prohibited, X.7.3 security conversion
        // impossible, X.7.4 security features not supported, X.7.5
        // cryptographic failure, X.7.7 integrity failure, X.7.8
        // credentials invalid, X.7.11 encryption required for the
        // mechanism, X.7.12 password transition needed (RFC 4954), X.7.15
        // priority too low (RFC 6710); 5.7.515 Exchange Online's sender
        // authentication requirement.
        ("7", "2" | "3" | "4" | "5" | "7" | "8" | "11" | "12" | "15" | "515") => {
            Reason::Securityerror
        }
        // X.7.9 is RFC 4954's "authentication mechanism too weak", but
        // Yahoo's "message not accepted for policy reasons" in nearly
        // every bounce that carries it.
        ("7", "9") => Reason::Policyviolation,
        // X.7.13 user account disabled; X.7.14 trust relationship required
        // (RFC 5248), which servers send for a disabled account too.
        ("7", "13" | "14") => Reason::Suspend,
        // X.7.16 message too big for its priority (RFC 6710).
        ("7", "16") => Reason::Mesgtoobig,
        // RFC 7293 (RRVS): X.7.17 the mailbox, X.7.18 the domain has had
        // another owner since the given time: the recipient meant is not
        // there (qmail sites send "no mailbox here by that name (#5.7.17)",
        // dev row `tt_1234211932` of `bounces-bounced`).
        ("7", "17" | "18") => Reason::Userunknown,
        // X.7.19 the RRVS test cannot be completed.
        ("7", "19") => Reason::Rejected,
        // RFC 3463/5248: X.7.6 cryptographic algorithm not supported, X.7.10
        // encryption needed, X.7.30 REQUIRETLS needed; X.7.29 ARC failed.
        ("7", "6" | "10" | "30") => Reason::Securityerror,
        // RFC 7372: X.7.20-22 DKIM, X.7.23-24 SPF, X.7.26 several checks
        // failed; RFC 8617 X.7.29 ARC; Exchange Online's 5.7.509 DMARC.
        ("7", "20" | "21" | "22" | "23" | "24" | "26" | "29" | "509") => Reason::Authfailure,
        // RFC 7372 X.7.25 reverse DNS validation failed.
        ("7", "25") => Reason::Requireptr,
        // RFC 7505: X.7.27 the sender's domain has a null MX, so the
        // sender (who could get no reply) is refused.
        ("7", "27") => Reason::Rejected,
        // X.7.28 mail flood detected: too much mail too fast.
        ("7", "28") => Reason::Speeding,
        // Exchange Online: 5.7.57 a client not authenticated to send
        // anonymous mail; 5.7.606-649 "access denied, banned sending IP".
        ("7", "57") => Reason::Securityerror,
        ("7", d) if d.len() == 3 && ("606"..="649").contains(&d) => Reason::Blocked,
        ("7", "650" | "651" | "652") => Reason::Badreputation,
        // Exchange Online: 5.7.512 "message must be RFC 5322 section 3.6.2
        // compliant" (its From field).
        ("7", "512") => Reason::Notcompliantrfc,
        _ => return None,
    };
    Some(r)
}

/// What RFC 3463's subject alone says, for a status whose detail decided
/// nothing ([`from_status`]) and about which nothing else is known: the
/// RFC makes `X.S.0` the meaning of any detail a reader does not know, so
/// an unregistered `5.7.xyz` or the generic `5.7.1` ("delivery not
/// authorized") is a security or policy refusal, an unknown `X.4.xyz` a
/// network or routing failure, `X.3.xyz` the mail system's. Only used when
/// no text, phase or narrower rule applied.
fn from_status_class(status: &str) -> Option<Reason> {
    let mut p = status.splitn(3, '.');
    let (class, subject, detail) = (p.next()?, p.next()?, p.next()?);
    if !matches!(class, "4" | "5")
        || detail.is_empty()
        || !detail.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(match subject {
        "3" => Reason::Systemerror,
        "4" => Reason::Networkerror,
        "5" if class == "5" => Reason::Syntaxerror,
        "6" => Reason::Contenterror,
        "7" => Reason::Securityerror,
        _ => return None,
    })
}

/// Statuses whose meaning is narrow enough to beat the text.
fn status_is_decisive(status: &str) -> bool {
    // Exchange Online's 5.7.606-649: the sending IP is banned.
    let banned_ip = status
        .strip_prefix("5.7.")
        .is_some_and(|d| d.len() == 3 && ("606"..="649").contains(&d));
    banned_ip
        || matches!(
            status.get(1..),
            Some(
                ".1.6"
                    | ".1.8"
                    | ".2.2"
                    | ".3.4"
                    | ".7.9"
                    | ".7.13"
                    | ".7.25"
                    | ".7.26"
                    | ".7.27"
                    | ".6.1"
                    | ".7.509"
                    | ".7.515"
                    | ".7.7"
                    | ".7.606"
                    | ".7.650"
            )
        )
}

/// Sisimai's pseudo status detail (`5.0.9NN`) per reason.
const PSEUDO: &[(Reason, &str)] = &[
    (Reason::Undefined, "900"),
    (Reason::Onhold, "901"),
    (Reason::Norelaying, "909"),
    (Reason::Filtered, "910"),
    (Reason::Userunknown, "911"),
    (Reason::Hostunknown, "912"),
    (Reason::Hasmoved, "916"),
    (Reason::Rejected, "918"),
    (Reason::Suspend, "921"),
    (Reason::Mailboxfull, "922"),
    (Reason::Exceedlimit, "923"),
    (Reason::Systemerror, "930"),
    (Reason::Systemfull, "931"),
    (Reason::Notaccept, "932"),
    (Reason::Mesgtoobig, "934"),
    (Reason::Mailererror, "939"),
    (Reason::Networkerror, "944"),
    (Reason::Toomanyconn, "945"),
    (Reason::Speeding, "946"),
    (Reason::Expired, "947"),
    (Reason::Contenterror, "960"),
    (Reason::Securityerror, "970"),
    (Reason::Blocked, "971"),
    (Reason::Policyviolation, "972"),
    (Reason::Requireptr, "973"),
    (Reason::Authfailure, "974"),
    (Reason::Badreputation, "975"),
    (Reason::Notcompliantrfc, "976"),
    (Reason::Spamdetected, "980"),
    (Reason::Virusdetected, "981"),
];

fn pseudo_reason(detail: &str) -> Option<Reason> {
    PSEUDO.iter().find(|(_, d)| *d == detail).map(|(r, _)| *r)
}

/// Sisimai's pseudo status for a reason, `class` being '4' or '5'.
pub fn pseudo_status(reason: Reason, class: char) -> String {
    match PSEUDO.iter().find(|(r, _)| *r == reason) {
        Some((_, d)) => format!("{class}.0.{d}"),
        None => String::new(),
    }
}

/// The SMTP command a diagnostic says the reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Conn,
    Helo,
    Mail,
    Rcpt,
    Data,
}

/// Reads the command from "in reply to RCPT TO command", "after RCPT TO:",
/// ">>> DATA" and the like: the phrase earliest in the text, then the first
/// listed. Replies are folded anywhere ("(in reply to\n    RCPT TO
/// command)"), so a space of a phrase matches any run of whitespace, and
/// letters match in any ASCII case: the text is read in place, not copied
/// folded (it can be the whole report).
pub fn find_command(text: &str) -> Option<Command> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(1)).find_map(|i| {
        let mut maybe = COMMAND_BYTE[0][usize::from(b[i])] & COMMAND_BYTE[1][usize::from(b[i + 1])];
        while maybe != 0 {
            let (phrase, command) = COMMAND_PATTERNS[maybe.trailing_zeros() as usize];
            if folded_at(text, i, phrase.as_bytes()) {
                return Some(command);
            }
            maybe &= maybe - 1;
        }
        None
    })
}

/// The SMTP command a reply quotes by its RFC 5321 name alone, written in
/// capitals as servers and reports write it ("RCPT TO", "MAIL FROM",
/// "DATA", "EHLO"), when no phrase of [`find_command`] says which reply
/// failed. With several, the last one before the first failure reply code
/// (a transcript's commands come before the reply that refused one), else
/// the first one.
pub fn find_command_verb(text: &str) -> Option<Command> {
    const VERBS: [(&str, Command); 6] = [
        ("RCPT", Command::Rcpt),
        ("MAIL FROM", Command::Mail),
        ("DATA", Command::Data),
        ("EHLO", Command::Helo),
        ("HELO", Command::Helo),
        ("STARTTLS", Command::Helo),
    ];
    let b = text.as_bytes();
    let boundary = |i: usize| i == 0 || !b[i - 1].is_ascii_alphanumeric();
    let mut seen: Vec<(usize, Command)> = Vec::new();
    for (verb, command) in VERBS {
        let mut from = 0;
        while let Some(at) = text[from..].find(verb).map(|i| i + from) {
            let end = at + verb.len();
            if boundary(at) && b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric()) {
                seen.push((at, command));
                break;
            }
            from = end;
        }
    }
    seen.sort_by_key(|(at, _)| *at);
    let first = *seen.first()?;
    let failure = std::iter::successors(find_reply_code_from(text, 0), |(i, _)| {
        find_reply_code_from(text, i + 1)
    })
    .find(|(_, c)| *c >= 400)
    .map(|(i, _)| i);
    let before = failure.and_then(|f| seen.iter().rev().find(|(at, _)| *at < f));
    Some(before.unwrap_or(&first).1)
}

/// The command a report names under a label of its own ("SMTP command:
/// RCPT TO", "-------SMTP command\nDATA", "Last command: MAIL FROM"): the
/// word "command" and, after colons, dashes or white space, an RFC 5321
/// verb standing alone.
pub fn find_labelled_command(text: &str) -> Option<Command> {
    const VERBS: [(&str, Command); 5] = [
        ("rcpt", Command::Rcpt),
        ("mail from", Command::Mail),
        ("data", Command::Data),
        ("ehlo", Command::Helo),
        ("helo", Command::Helo),
    ];
    let b = text.as_bytes();
    has_word(b, b"command").find_map(|at| {
        let mut i = at + "command".len();
        while b
            .get(i)
            .is_some_and(|c| matches!(c, b':' | b'-' | b'=' | b' ' | b'\t' | b'\r' | b'\n'))
        {
            i += 1;
        }
        if i == at + "command".len() {
            return None;
        }
        VERBS.iter().find_map(|(verb, command)| {
            let end = i + verb.len();
            (b.get(i..end)?.eq_ignore_ascii_case(verb.as_bytes())
                && b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric()))
            .then_some(*command)
        })
    })
}

/// For the first and the second byte of the command phrases: the bits of
/// the phrases (their places in the list) with that byte there, in either
/// case. No phrase has a space in either place.
static COMMAND_BYTE: [[u32; 256]; 2] = {
    assert!(COMMAND_PATTERNS.len() <= 32);
    let mut out = [[0; 256]; 2];
    let mut i = 0;
    while i < COMMAND_PATTERNS.len() {
        let mut k = 0;
        while k < 2 {
            let c = COMMAND_PATTERNS[i].0.as_bytes()[k];
            assert!(c != b' ');
            out[k][c as usize] |= 1 << i;
            out[k][c.to_ascii_uppercase() as usize] |= 1 << i;
            k += 1;
        }
        i += 1;
    }
    out
};

/// Whether `phrase` (lower case, single spaces) starts at byte `i` of
/// `text` once the text's whitespace runs are read as one space
/// (`char::is_whitespace`, as `split_whitespace` uses) and its ASCII
/// letters in lower case.
fn folded_at(text: &str, mut i: usize, phrase: &[u8]) -> bool {
    let b = text.as_bytes();
    for &p in phrase {
        if p != b' ' {
            if b.get(i).map(u8::to_ascii_lowercase) != Some(p) {
                return false;
            }
            i += 1;
            continue;
        }
        let run = i;
        while i < b.len() {
            let (space, width) = crate::bytes::space_at(text, i);
            if !space {
                break;
            }
            i += width;
        }
        if i == run {
            return false;
        }
    }
    true
}

/// The phrases that name a command, earliest in the text wins (then the
/// first listed).
const COMMAND_PATTERNS: [(&str, Command); 31] = [
    ("in reply to end of data", Command::Data),
    ("after end of data", Command::Data),
    ("in reply to data", Command::Data),
    ("after data", Command::Data),
    (">>> data", Command::Data),
    ("end of data command", Command::Data),
    ("in reply to rcpt to", Command::Rcpt),
    ("after rcpt to", Command::Rcpt),
    (">>> rcpt to", Command::Rcpt),
    ("[rcpt_to]", Command::Rcpt),
    ("smtp:rcpt", Command::Rcpt),
    ("rcpt to:<", Command::Rcpt),
    ("in reply to mail from", Command::Mail),
    ("after mail from", Command::Mail),
    (">>> mail from", Command::Mail),
    ("in reply to helo", Command::Helo),
    ("in reply to ehlo", Command::Helo),
    (">>> helo", Command::Helo),
    (">>> ehlo", Command::Helo),
    ("refused to talk to me", Command::Helo),
    ("after initial connection", Command::Conn),
    // Exim names pipelined commands so; qmail says which step failed in
    // fixed sentences.
    ("after pipelined rcpt to", Command::Rcpt),
    ("after pipelined mail from", Command::Mail),
    ("does not like recipient", Command::Rcpt),
    ("but sender was rejected", Command::Mail),
    ("failed after i sent the message", Command::Data),
    ("but greeting failed", Command::Conn),
    // Sun/Oracle Messaging Server: the remote server refused the address;
    // Postfix's recipient restrictions answer RCPT TO; GMX's Exim names
    // the command alone.
    ("has rejected address", Command::Rcpt),
    ("recipient address rejected", Command::Rcpt),
    ("after rcpt command", Command::Rcpt),
    ("after mail command", Command::Mail),
];

/// A fact worked out when a rule first asks for it.
#[derive(Default)]
pub struct Deferred<'a, T> {
    value: OnceCell<T>,
    make: Option<&'a dyn Fn() -> T>,
}

impl<'a, T: Copy + Default> Deferred<'a, T> {
    pub fn new(make: &'a dyn Fn() -> T) -> Self {
        Deferred {
            value: OnceCell::new(),
            make: Some(make),
        }
    }

    #[cfg(test)]
    pub fn known(value: T) -> Self {
        Deferred {
            value: OnceCell::from(value),
            make: None,
        }
    }

    pub fn get(&self) -> T {
        *self
            .value
            .get_or_init(|| self.make.map(|make| make()).unwrap_or_default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Deferred<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Deferred").field(&self.value.get()).finish()
    }
}

/// What is known about one failed recipient before classification.
#[derive(Debug, Default)]
pub struct Facts<'a> {
    pub status: &'a str,
    pub reply_code: Option<u16>,
    pub diagnostic: &'a str,
    pub action: &'a str,
    /// Read when a rule asks: it may take reading the whole report, and
    /// most reasons are decided without it.
    pub command: Deferred<'a, Option<Command>>,
    /// The type of a DSN's Diagnostic-Code (`smtp`, `x-unix`, ...).
    pub diagnostic_type: &'a str,
    /// The diagnostic was said about this recipient (not a report's
    /// general paragraph).
    pub specific: bool,
}

/// Sentences in which a provider says the address does not exist, whatever
/// the SMTP stage (Google's "Address not found" notice, Yahoo's and
/// Verizon's replies): not a filter's words, so no RCPT is needed.
const SURELY_UNKNOWN: &[&str] = &[
    "because the address couldn't be found",
    // Yahoo's SMTP reply (Sisimai's `Rhost::YahooInc`); other MTAs that
    // say "This user doesn't have a ... account" use it after DATA.
    "delivery error: dd this user doesn't have a ",
    "no valid recipients for this mm",
    // X.400 (X.411) diagnostics and the Exchange NDRs of X.400 descent: a
    // directory said the name is unknown; no SMTP phase applies.
    "unrecognized-or-name",
    "unrecognised-or-name",
    "unrecognized or-name",
    "ambiguous-or-name",
    "recipient name is not recognized",
    // Lotus Notes/Domino: the directory has no such person, or its entry
    // names no mail file (IBM's list of Domino delivery failures).
    "not listed in domino directory",
    "not listed in public name & address book",
    "does not specify a valid notes mail file",
];

/// Which reasons' phrases a text holds, found in one pass.
struct Said(u64);

/// The bit of [`SURELY_UNKNOWN`] (past every reason's bit).
const SURE_BIT: u64 = 1 << 63;

/// How many phrases [`TEXT_RULES`] and [`SURELY_UNKNOWN`] hold.
const SAID_COUNT: usize = {
    let (mut n, mut i) = (SURELY_UNKNOWN.len(), 0);
    while i < TEXT_RULES.len() {
        n += TEXT_RULES[i].1.len();
        i += 1;
    }
    n
};

/// Every phrase of [`TEXT_RULES`] and [`SURELY_UNKNOWN`] with its bit.
// Only read at compile time, to build the index: no copy is ever made at
// run time, whatever its size.
#[allow(clippy::large_const_arrays)]
const SAID_PHRASES: [(u64, &str); SAID_COUNT] = {
    let mut out = [(0, ""); SAID_COUNT];
    let (mut n, mut i) = (0, 0);
    while i < TEXT_RULES.len() {
        let mut j = 0;
        while j < TEXT_RULES[i].1.len() {
            out[n] = (1u64 << (TEXT_RULES[i].0 as u8), TEXT_RULES[i].1[j]);
            n += 1;
            j += 1;
        }
        i += 1;
    }
    i = 0;
    while i < SURELY_UNKNOWN.len() {
        out[n] = (SURE_BIT, SURELY_UNKNOWN[i]);
        n += 1;
        i += 1;
    }
    out
};

/// [`SAID_PHRASES`] indexed at compile time.
static SAID_INDEX: phrase::Index<SAID_COUNT> = phrase::Index::new(&SAID_PHRASES);

impl Said {
    fn of(lower: &str) -> Said {
        Said(SAID_INDEX.groups_in(lower.as_bytes()))
    }
}

/// Whether `text` says why mail failed in words the classifier knows.
pub fn names_a_reason(text: &str) -> bool {
    Said::of(&text.to_ascii_lowercase()).0 & !SURE_BIT != 0
}

/// Whether the text holds one of the phrases of `reason`.
fn says(said: &Said, reason: Reason) -> bool {
    said.0 & (1u64 << (reason as u8)) != 0
}

/// Classes decided by status or text, in Sisimai's order of precedence.
const FIRST: &[Reason] = &[
    Reason::Mailboxfull,
    Reason::Mesgtoobig,
    Reason::Exceedlimit,
    Reason::Suspend,
    Reason::Hasmoved,
    Reason::Norelaying,
    Reason::Authfailure,
    Reason::Userunknown,
    Reason::Filtered,
    Reason::Requireptr,
    Reason::Notcompliantrfc,
    Reason::Badreputation,
    Reason::Rejected,
    Reason::Hostunknown,
    Reason::Virusdetected,
    Reason::Spamdetected,
    Reason::Speeding,
    Reason::Toomanyconn,
    Reason::Blocked,
];

/// Classes tried on the text alone when the status decided nothing.
const SECOND: &[Reason] = &[
    Reason::Policyviolation,
    Reason::Contenterror,
    Reason::Notaccept,
    Reason::Systemerror,
    Reason::Networkerror,
    Reason::Systemfull,
    Reason::Expired,
    Reason::Securityerror,
    Reason::Mailererror,
    Reason::Syntaxerror,
];

/// Statuses too vague to decide when the text says something else.
fn status_is_vague(r: Reason) -> bool {
    matches!(
        r,
        Reason::Undefined
            | Reason::Onhold
            | Reason::Systemerror
            | Reason::Securityerror
            | Reason::Expired
            | Reason::Networkerror
    )
}

fn before_data(c: Option<Command>) -> bool {
    matches!(
        c,
        Some(Command::Conn | Command::Helo | Command::Mail | Command::Rcpt)
    )
}

/// Sisimai's `true()` of one class: by status, by text, or both; the
/// name of the rule that held, if one did.
fn holds(reason: Reason, f: &Facts, lower: &Said, named: Option<Reason>) -> Option<&'static str> {
    let by = |status: bool, rule_status: &'static str, rule_text: &'static str| {
        Some(if status { rule_status } else { rule_text })
    };
    match reason {
        Reason::Userunknown => {
            if named == Some(Reason::Userunknown) {
                // A 5.1.1 whose text says something more specific is that.
                // Rejected's words name the sender; a generic one ("access
                // denied") beside words of a missing mailbox ("Mailbox
                // unavailable or access denied", IMail's and others' reply
                // to RCPT TO) leaves the X.1.1 meaning standing.
                let missing = says(lower, Reason::Userunknown) && !names_the_sender(f.diagnostic);
                let other = [
                    Reason::Norelaying,
                    Reason::Blocked,
                    Reason::Mailboxfull,
                    Reason::Hasmoved,
                    Reason::Rejected,
                    Reason::Notaccept,
                ]
                .iter()
                .any(|r| says(lower, *r) && !(*r == Reason::Rejected && missing));
                (!other).then_some("status-x.1.x-address")
            } else if named == Some(Reason::Hostunknown) || says(lower, Reason::Hostunknown) {
                // The domain is not there (RFC 3463 X.1.2, "domain not
                // found"): no mailbox of it can be, whatever else is said
                // ("Recipient address rejected: Domain not found").
                None
            } else if says(lower, Reason::Userunknown) && f.command.get() == Some(Command::Rcpt) {
                Some("phase-rcpt+text-userunknown")
            } else if says(lower, Reason::Userunknown)
                && f.command.get().is_none()
                && named != Some(Reason::Filtered)
                && !says(lower, Reason::Filtered)
            {
                // No step named: the words say the mailbox is not there
                // (RFC 3463 X.1.1, RFC 5321's 550 "mailbox unavailable",
                // which RCPT TO answers); nothing says a filter read the
                // message. Sisimai calls this `filtered`; the corpus'
                // labels follow this rule instead (see its README).
                Some("text-userunknown+step-unnamed")
            } else if lower.0 & SURE_BIT != 0 && named != Some(Reason::Filtered) {
                Some("provider-text-address-not-found")
            } else {
                None
            }
        }
        Reason::Filtered => {
            if named == Some(Reason::Suspend) {
                None
            } else if named == Some(Reason::Filtered) {
                (says(lower, Reason::Userunknown) || says(lower, Reason::Filtered))
                    .then_some("status-x.2.0/1+text")
            } else if says(lower, Reason::Filtered) && !before_data(f.command.get()) {
                Some("text-filtered")
            } else if says(lower, Reason::Userunknown) && f.command.get() == Some(Command::Data) {
                // After DATA the whole message was read: "unknown user"
                // there is a content filter's answer.
                Some("phase-after-data+text-userunknown")
            } else {
                None
            }
        }
        Reason::Mesgtoobig => {
            if named == Some(Reason::Mesgtoobig) {
                Some("status-x.3.4")
            } else {
                (named != Some(Reason::Exceedlimit) && says(lower, Reason::Mesgtoobig))
                    .then_some("text-mesgtoobig")
            }
        }
        Reason::Hostunknown => {
            // A DNS answer that the name does not exist (RFC 1035's Name
            // Error, NXDOMAIN) decides, whatever generic words of a DNS
            // error ("DNS Error: Domain name not found") come with it;
            // unless the status is temporary (RFC 3463 class 4: Gmail
            // retries a name error and says 4.0.0), which makes it a lookup
            // failed for now.
            // (Both names are hostunknown phrases: read only when one is there.)
            let no_such_name = !f.status.starts_with('4')
                && says(lower, Reason::Hostunknown)
                && names_no_such_domain(f.diagnostic);
            if named == Some(Reason::Hostunknown) {
                (no_such_name || !says(lower, Reason::Networkerror)).then_some("status-hostunknown")
            } else if no_such_name {
                Some("text-dns-name-error")
            } else {
                // "Host not found, try again" is a DNS lookup that failed
                // for now (a network error), not a host that is not there.
                (says(lower, Reason::Hostunknown) && !says(lower, Reason::Networkerror))
                    .then_some("text-hostunknown")
            }
        }
        // Rejected names the envelope sender (MAIL FROM). Refused at the
        // connection or greeting, the client host was refused: that is
        // blocked (or too many connections), whatever the words.
        Reason::Rejected
            if matches!(f.command.get(), Some(Command::Conn | Command::Helo))
                || says(lower, Reason::Toomanyconn)
                || (says(lower, Reason::Blocked)
                    && f.command.get() != Some(Command::Mail)
                    && !names_the_sender(f.diagnostic)) =>
        {
            // Words of a block list or of the client's IP, said to the
            // connection rather than of the sender's address: blocked.
            None
        }
        // RFC 3463 X.2.1 (IANA: "Mailbox disabled, not accepting
        // messages": the mailbox exists) when the words say nothing else
        // than RFC 5321's generic "mailbox unavailable" (Sisimai reads
        // X.2.1 as `filtered`; words of an unknown user or a filter decide
        // as before).
        Reason::Suspend
            if named == Some(Reason::Filtered)
                && !says(lower, Reason::Suspend)
                && status_detail(f.status) == Some(("2", "1")) =>
        {
            (!says_beyond_unavailable(f.diagnostic)).then_some("status-x.2.1-mailbox-disabled")
        }
        r if named == Some(r) => by(true, "status", ""),
        r if says(lower, r) => Some(text_rule(r)),
        _ => None,
    }
}

/// The name of the phrase-list rule of a reason.
fn text_rule(r: Reason) -> &'static str {
    match r {
        Reason::Mailboxfull => "text-mailboxfull",
        Reason::Mesgtoobig => "text-mesgtoobig",
        Reason::Exceedlimit => "text-exceedlimit",
        Reason::Suspend => "text-suspend",
        Reason::Hasmoved => "text-hasmoved",
        Reason::Norelaying => "text-norelaying",
        Reason::Authfailure => "text-authfailure",
        Reason::Userunknown => "text-userunknown",
        Reason::Filtered => "text-filtered",
        Reason::Requireptr => "text-requireptr",
        Reason::Notcompliantrfc => "text-notcompliantrfc",
        Reason::Badreputation => "text-badreputation",
        Reason::Rejected => "text-rejected",
        Reason::Hostunknown => "text-hostunknown",
        Reason::Virusdetected => "text-virusdetected",
        Reason::Spamdetected => "text-spamdetected",
        Reason::Speeding => "text-speeding",
        Reason::Toomanyconn => "text-toomanyconn",
        Reason::Blocked => "text-blocked",
        Reason::Policyviolation => "text-policyviolation",
        Reason::Contenterror => "text-contenterror",
        Reason::Notaccept => "text-notaccept",
        Reason::Systemerror => "text-systemerror",
        Reason::Networkerror => "text-networkerror",
        Reason::Systemfull => "text-systemfull",
        Reason::Expired => "text-expired",
        Reason::Securityerror => "text-securityerror",
        Reason::Mailererror => "text-mailererror",
        Reason::Syntaxerror => "text-syntaxerror",
        _ => "text",
    }
}

/// The reason of a failure.
#[cfg(test)]
pub fn reason(f: &Facts) -> Reason {
    reason_why(f).0
}

/// The reason of a failure and the rule that decided it. The order:
/// the report's own exact facts (a provider's error code, a local
/// mailer's diagnostic type, a status whose RFC 3463 meaning is narrow);
/// then the status, the SMTP phase and the phrase lists together, most
/// specific class first; then the text alone; then the DSN action and the
/// phase alone; then the status and the reply code alone (their RFC 3463
/// and RFC 5321 meanings); `onhold`/`undefined` only when nothing applies.
pub fn reason_why(f: &Facts) -> (Reason, &'static str) {
    // A success status (RFC 3463 class 2) is no failure, whatever else the
    // notice says, unless a failure reply code contradicts it.
    if (f.status.starts_with('2') && f.reply_code.is_none_or(|c| c < 300))
        || f.action.starts_with("delivered")
    {
        return (Reason::Delivered, "status-class-2-success");
    }
    // Providers that name the cause by a code of their own: the code is
    // more exact than any wording around it.
    if let Some(r) = provider_code(f.diagnostic) {
        return (r, "provider-code");
    }
    let lower = Said::of(&f.diagnostic.to_ascii_lowercase());
    let named = from_status(f.status);
    // A spam filter's report quoted in the refusal names its verdict: the
    // tests it lists (SpamAssassin's `RDNS_NONE`, `RCVD_IN_*`, ...) are the
    // evidence for it, not causes of their own.
    // (Both phrases of the template are spam phrases: the text is read
    // again only when the index saw one.)
    if says(&lower, Reason::Spamdetected) && quotes_a_spam_report(f.diagnostic) {
        return (Reason::Spamdetected, "text-spam-filter-report");
    }
    // A local delivery program failed (procmail, a pipe): a mailer error,
    // unless it says the mailbox is full.
    if f.diagnostic_type.eq_ignore_ascii_case("x-unix") {
        return match holds(Reason::Mailboxfull, f, &lower, named) {
            Some(rule) => (Reason::Mailboxfull, rule),
            None => (Reason::Mailererror, "dsn-diagnostic-type-x-unix"),
        };
    }
    if status_is_decisive(f.status)
        && let Some(r) = named
    {
        return (r, "status-narrow");
    }
    for r in FIRST {
        if let Some(rule) = holds(*r, f, &lower, named) {
            return (*r, rule);
        }
    }
    // The word spam itself (or RFC 2505's "unsolicited"), when no list
    // knew the sentence and the status says nothing narrower: every
    // published refusal that uses the word (Google's 5.7.1 "likely
    // unsolicited mail ... to reduce the amount of spam", Exchange's "rejected
    // as spam by Content Filtering", Mimecast's spam signatures, Barracuda's
    // spam score) refuses the message's content. Words of an IP, a block list
    // or the sender were decided above (blocked, rejected).
    if named.is_none_or(status_is_vague) && names_spam(f.diagnostic) {
        return (Reason::Spamdetected, "text-spam-word");
    }
    // A status whose class the text contradicted above does not decide.
    if let Some(r) = named.filter(|r| !status_is_vague(*r) && !FIRST.contains(r)) {
        return (r, "status");
    }
    if let Some(r) = SECOND.iter().find(|r| says(&lower, **r)) {
        return (*r, text_rule(*r));
    }
    if let Some(r) = provider_text(f.diagnostic) {
        return (r, "provider-text");
    }
    if matches!(f.command.get(), None | Some(Command::Rcpt))
        && named.is_none_or(status_is_vague)
        && names_a_missing_mailbox(f.diagnostic)
    {
        return (Reason::Userunknown, "text-mailbox-word+missing-word");
    }
    if named.is_none_or(status_is_vague) && names_an_oversized_message(f.diagnostic) {
        return (Reason::Mesgtoobig, "text-message-size-word+limit-word");
    }
    if f.action.starts_with("delayed") || f.action.starts_with("expired") {
        return (Reason::Expired, "dsn-action-delayed");
    }
    if matches!(f.command.get(), Some(Command::Helo | Command::Conn)) {
        return (Reason::Blocked, "phase-connection-or-helo");
    }
    // Refused at MAIL FROM, with nothing more specific said: RFC 5321's
    // MAIL command carries only the sender, so the sender was refused.
    if f.command.get() == Some(Command::Mail) && named.is_none_or(status_is_vague) {
        // RFC 1870 6.1: 552 there refuses the SIZE the client declared.
        if f.reply_code == Some(552) {
            return (Reason::Mesgtoobig, "phase-mail-from+reply-552-rfc1870");
        }
        return (Reason::Rejected, "phase-mail-from");
    }
    match named {
        // A vague status alone ("4.3.0 try again later") leaves the cause open.
        Some(Reason::Systemerror) if f.status.starts_with('4') => {
            (Reason::Onhold, "onhold-vague-temporary-status")
        }
        Some(r) => (r, "status-alone"),
        None => {
            if let Some(r) = from_reply_code(f.reply_code, f.command.get()) {
                return (r, "reply-code-rfc5321");
            }
            if f.reply_code.is_some_and(|c| (500..=504).contains(&c)) {
                return (Reason::Syntaxerror, "reply-code-5.0x-syntax");
            }
            // The status' subject alone (RFC 3463: an unknown detail reads
            // as X.S.0), with the same caution as above for a vague
            // temporary one.
            match from_status_class(f.status) {
                Some(Reason::Systemerror) if f.status.starts_with('4') => {
                    return (Reason::Onhold, "onhold-vague-temporary-status");
                }
                Some(r) => return (r, "status-class-rfc3463"),
                None => {}
            }
            // A server said something no rule knows: held for a human, as
            // Sisimai does; with nothing said at all the reason is unknown.
            if find_reply_code(f.diagnostic).is_some()
                || find_status(f.diagnostic).is_some()
                || (f.specific && !f.diagnostic.trim().is_empty())
            {
                (Reason::Onhold, "onhold-no-rule-applies")
            } else {
                (Reason::Undefined, "undefined-nothing-said")
            }
        }
    }
}

/// Whether `text` (any case) holds `word` starting at a word boundary.
fn has_word(text: &[u8], word: &[u8]) -> impl Iterator<Item = usize> {
    let n = word.len();
    (0..text.len().saturating_sub(n - 1)).filter(move |&i| {
        (i == 0 || !text[i - 1].is_ascii_alphanumeric())
            && text[i..i + n].eq_ignore_ascii_case(word)
    })
}

/// The subject and detail of an enhanced status (`5.2.1` -> `("2", "1")`).
fn status_detail(status: &str) -> Option<(&str, &str)> {
    let mut p = status.splitn(3, '.');
    let _class = p.next()?;
    Some((p.next()?, p.next()?))
}

/// RFC 5321 4.2.2's generic text of 450/550 ("Requested action not taken:
/// mailbox unavailable"), which says nothing of why.
const GENERIC_UNAVAILABLE: &[&str] = &[
    "requested action not taken: mailbox unavailable",
    "mailbox unavailable",
    "mailbox is unavailable",
    "mailbox not available",
    "mailbox is not available",
];

/// Whether a text says more than [`GENERIC_UNAVAILABLE`]: a phrase of any
/// reason once the generic text is taken out.
fn says_beyond_unavailable(text: &str) -> bool {
    let mut lower = text.to_ascii_lowercase();
    for g in GENERIC_UNAVAILABLE {
        lower = lower.replace(g, " ");
    }
    Said::of(&lower).0 != 0
}

/// Whether `text` (any case) holds `word` as a whole word.
fn has_whole_word(text: &[u8], word: &[u8]) -> bool {
    has_word(text, word).any(|at| {
        text.get(at + word.len())
            .is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

/// Whether a text calls the message spam in so many words: "spam" or
/// "unsolicited" as a word of its own (not `spamhaus.org`, `spamcop`, the
/// names of block lists, which speak of the sending IP).
fn names_spam(text: &str) -> bool {
    let b = text.as_bytes();
    has_whole_word(b, b"spam") || has_whole_word(b, b"unsolicited")
}

/// Whether a text quotes a spam filter's report: SpamAssassin's default
/// report template ("has identified this incoming email as possible
/// spam", "Content analysis details: (N points, M required)").
fn quotes_a_spam_report(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("content analysis details") || lower.contains("as possible spam")
}

/// Whether a DNS answer said the name does not exist: RFC 1035's RCODE 3
/// ("Name Error": "the domain name referenced in the query does not
/// exist"), NXDOMAIN by its usual name, Gmail's "Domain name not found";
/// not when the same text says the lookup is to be tried again (a server
/// failure, RCODE 2).
fn names_no_such_domain(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    (lower.contains("nxdomain") || lower.contains("domain name not found"))
        && !lower.contains("servfail")
        && !lower.contains("try again")
}

/// Whether a text speaks of the envelope sender (then a refusal names the
/// sender's address, not the client's IP).
fn names_the_sender(text: &str) -> bool {
    let b = text.as_bytes();
    ["sender", "mail from", "envelope from", "return-path"]
        .iter()
        .any(|w| has_word(b, w.as_bytes()).next().is_some())
}

/// Words that name a recipient's mailbox.
const MAILBOX_WORDS: &[&str] = &[
    "user",
    "recipient",
    "mailbox",
    "address",
    "account",
    "addressee",
    "e-mail address",
    "email address",
];

/// Words that say the mailbox is not there, after the mailbox word.
const MISSING_AFTER: &[&str] = &[
    "unknown",
    "not found",
    "does not exist",
    "doesn't exist",
    "not exist",
    "no longer exists",
    "is invalid",
    "not valid",
    "not known",
    "nonexistent",
    "non-existent",
    "not recognized",
    "unrecognized",
    "not listed",
    "could not be found",
    "cannot be found",
    "no longer valid",
    "no longer in use",
];

/// Words that say it before the mailbox word.
const MISSING_BEFORE: &[&str] = &[
    "unknown",
    "invalid",
    "no such",
    "nonexistent",
    "non-existent",
    "non existent",
    "unrecognized",
    "bad",
];

/// A recipient's mailbox word and, near it, a word saying it is missing
/// ("user <x@y> not found", "unknown or invalid recipient <x@y>"), when the
/// phrase lists know no sentence of the text. Not about the sender.
fn names_a_missing_mailbox(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    MAILBOX_WORDS.iter().any(|noun| {
        has_word(b, noun.as_bytes()).any(|at| {
            let before = &lower[lower.floor_char_boundary(at.saturating_sub(24))..at];
            if before.contains("sender") || before.contains("from") {
                return false;
            }
            let end = lower.floor_char_boundary((at + noun.len() + 60).min(lower.len()));
            let after = &lower[at + noun.len()..end];
            MISSING_AFTER.iter().any(|w| after.contains(w))
                || MISSING_BEFORE.iter().any(|w| before.contains(w))
        })
    })
}

/// A sentence that says the message's size is over a limit ("the message
/// size of 12 MB exceeds the limit", "message is over the size limit"),
/// when no phrase list knew it: the words "message" and "size" in one
/// sentence with a word of excess, and no mailbox word (a mailbox's size
/// is a full mailbox, decided before).
fn names_an_oversized_message(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower
        .split(['.', ';', '\n'])
        .filter(|s| s.contains("size") && s.contains("message"))
        .any(|s| {
            !s.contains("mailbox")
                && !s.contains("quota")
                && [
                    "exceed",
                    "too large",
                    "too big",
                    "over the",
                    "limit",
                    "larger than",
                ]
                .iter()
                .any(|w| s.contains(w))
        })
}

/// What an RFC 5321 reply code alone says, when no status, phrase or
/// phase decided: only the codes whose meaning is one cause.
fn from_reply_code(code: Option<u16>, command: Option<Command>) -> Option<Reason> {
    Some(match code? {
        // 530/538: authentication (or encryption) required; 534/535:
        // mechanism too weak, credentials invalid (RFC 4954).
        530 | 534 | 535 | 538 => Reason::Securityerror,
        // 552 at RCPT or after DATA without words: exceeded storage
        // allocation (RFC 5321 4.2.2).
        552 if command != Some(Command::Mail) => Reason::Mailboxfull,
        // 552 to MAIL FROM: the SIZE declared exceeds the server's fixed
        // maximum (RFC 1870 6.1).
        552 => Reason::Mesgtoobig,
        // 521 and 556: the host or domain does not accept mail (RFC 7504).
        521 | 556 => Reason::Notaccept,
        // 551: user not local, a forward path is named.
        551 => Reason::Hasmoved,
        // 550 to RCPT TO with nothing else said: RFC 5321 3.3, "if the
        // recipient is known not to be a deliverable address, the SMTP
        // server returns a 550 reply".
        550 if command == Some(Command::Rcpt) => Reason::Userunknown,
        // 553 to RCPT TO: mailbox name not allowed (its syntax; RFC 3463
        // X.1.3, a bad destination mailbox address).
        553 if command == Some(Command::Rcpt) => Reason::Userunknown,
        // 555: MAIL FROM/RCPT TO parameters not recognized (RFC 5321).
        555 => Reason::Syntaxerror,
        _ => return None,
    })
}

/// The big receivers' own wording (after the phrase lists, before giving
/// up): sentences that only one provider writes and that name the cause.
const PROVIDER_TEXT: &[(&str, Reason)] = &[
    // Microsoft's "banned sender" and IP lists.
    ("access denied, banned sender", Reason::Rejected),
    (
        "part of their network is on our block list",
        Reason::Blocked,
    ),
    // Google: the receiving rate of one recipient.
    ("is receiving mail at a rate that", Reason::Speeding),
    ("is receiving mail too quickly", Reason::Speeding),
    // Yahoo's deferral codes: TSS04 volume or complaints, TS0x the IP.
    ("[tss04]", Reason::Toomanyconn),
    ("[ts01]", Reason::Blocked),
    ("[ts02]", Reason::Blocked),
    ("[ts03]", Reason::Blocked),
];

/// The reason of a provider's own sentence in `text`.
fn provider_text(text: &str) -> Option<Reason> {
    let lower = text.to_ascii_lowercase();
    PROVIDER_TEXT
        .iter()
        .find(|(p, _)| lower.contains(p))
        .map(|(_, r)| *r)
}

/// Orange and La Poste error codes (`LPN007_416`, `OFR_506`, `OUK_513`,
/// `LPN105-104`): the last three digits name the cause (Sisimai's
/// `Rhost::FrancePTT`); a code the table does not know leaves it open.
const FRANCE_PTT: &[(&str, Reason)] = &[
    ("101", Reason::Blocked),
    ("102", Reason::Blocked),
    ("103", Reason::Blocked),
    ("104", Reason::Toomanyconn),
    ("305", Reason::Securityerror),
    ("401", Reason::Blocked),
    ("402", Reason::Securityerror),
    ("403", Reason::Rejected),
    ("405", Reason::Rejected),
    ("415", Reason::Rejected),
    ("416", Reason::Userunknown),
    ("417", Reason::Mailboxfull),
    ("418", Reason::Userunknown),
    ("420", Reason::Suspend),
    ("421", Reason::Rejected),
    ("426", Reason::Suspend),
    ("505", Reason::Systemerror),
    ("506", Reason::Spamdetected),
    ("510", Reason::Blocked),
    ("514", Reason::Mesgtoobig),
    ("517", Reason::Policyviolation),
    ("630", Reason::Policyviolation),
    ("999", Reason::Blocked),
];

/// GoDaddy's `IBnnn` codes (Sisimai's `Rhost::GoDaddy`).
const GODADDY: &[(&str, Reason)] = &[
    ("IB007", Reason::Toomanyconn),
    ("IB101", Reason::Expired),
    ("IB103", Reason::Blocked),
    ("IB104", Reason::Blocked),
    ("IB105", Reason::Blocked),
    ("IB106", Reason::Blocked),
    ("IB108", Reason::Blocked),
    ("IB110", Reason::Blocked),
    ("IB111", Reason::Blocked),
    ("IB112", Reason::Blocked),
    ("IB113", Reason::Blocked),
    ("IB212", Reason::Spamdetected),
    ("IB401", Reason::Securityerror),
    ("IB501", Reason::Rejected),
    ("IB502", Reason::Rejected),
    ("IB504", Reason::Speeding),
    ("IB506", Reason::Rejected),
    ("IB508", Reason::Rejected),
    ("IB510", Reason::Toomanyconn),
    ("IB607", Reason::Speeding),
    ("IB705", Reason::Virusdetected),
];

/// Exchange's own error names (Sisimai's `Lhost::Exchange2007`).
const EXCHANGE: &[(&str, Reason)] = &[
    ("SMTPSEND.DNS.NonExistentDomain", Reason::Hostunknown),
    ("SMTPSEND.DNS.MxLoopback", Reason::Networkerror),
    ("RESOLVER.ADR.BadPrimary", Reason::Systemerror),
    ("RESOLVER.ADR.RecipNotFound", Reason::Userunknown),
    ("RESOLVER.ADR.ExRecipNotFound", Reason::Userunknown),
    ("RESOLVER.ADR.RecipLimit", Reason::Toomanyconn),
    ("RESOLVER.ADR.InvalidInSmtp", Reason::Systemerror),
    ("RESOLVER.ADR.Ambiguous", Reason::Systemerror),
    ("RESOLVER.RST.AuthRequired", Reason::Securityerror),
    ("RESOLVER.RST.NotAuthorized", Reason::Rejected),
    ("RESOLVER.RST.RecipSizeLimit", Reason::Mesgtoobig),
    ("QUEUE.Expired", Reason::Expired),
    // The mailbox store refused for its quota (5.2.2).
    ("QuotaExceededException", Reason::Mailboxfull),
];

/// Error codes the big receivers publish for their refusals, written in
/// capitals as a word of their own: Outlook.com's postmaster codes
/// (`SC-`, `DY-`, `OU-` the sending IP or its reputation, `RP-` its rate or
/// connections), Yahoo's `[BL2x]` block lists and `[TSS09]` permanent
/// deferral, AOL's `DNS:NR` (no reverse DNS), `RLY:`/`DYN:`/`RTR:` IP blocks
/// and `HVU:` content blocks,
/// Cox's `CX...` codes.
const PUBLISHED_CODES: &[(&str, Reason)] = &[
    ("SC-001", Reason::Blocked),
    ("SC-002", Reason::Blocked),
    ("SC-003", Reason::Blocked),
    ("SC-004", Reason::Blocked),
    ("DY-001", Reason::Blocked),
    ("DY-002", Reason::Blocked),
    ("OU-001", Reason::Blocked),
    ("OU-002", Reason::Blocked),
    ("RP-001", Reason::Toomanyconn),
    ("RP-002", Reason::Toomanyconn),
    ("RP-003", Reason::Toomanyconn),
    ("BL21", Reason::Blocked),
    ("BL22", Reason::Blocked),
    ("BL23", Reason::Blocked),
    ("TSS09", Reason::Blocked),
    ("DNS:NR", Reason::Requireptr),
    ("RLY:", Reason::Blocked),
    ("DYN:", Reason::Blocked),
    // AOL's postmaster list of errors: `RTR:` codes refuse the sending IP
    // (RTR:DU/BB dynamic or residential, RTR:CH compromised, RTR:BG not
    // allocated, RTR:RD a dynamic-looking reverse DNS); `HVU:` codes are
    // "content-based" blocks of a domain in the body "previously used to
    // send unsolicited email" (554 HVU:B1).
    ("RTR:", Reason::Blocked),
    ("HVU:", Reason::Spamdetected),
    ("CXBL", Reason::Blocked),
    ("CDRBL", Reason::Blocked),
    ("CXDNS", Reason::Requireptr),
    ("CXSNDR", Reason::Rejected),
    ("CXCNCT", Reason::Toomanyconn),
    ("CXMXRT", Reason::Toomanyconn),
];

/// The first of [`PUBLISHED_CODES`] standing as a word of its own.
fn published_code(text: &str) -> Option<Reason> {
    let b = text.as_bytes();
    PUBLISHED_CODES.iter().find_map(|(code, reason)| {
        let mut from = 0;
        while let Some(at) = text[from..].find(code).map(|i| i + from) {
            let end = at + code.len();
            let before = at == 0 || !b[at - 1].is_ascii_alphanumeric();
            let after =
                code.ends_with(':') || b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric());
            if before && after {
                return Some(*reason);
            }
            from = end;
        }
        None
    })
}

/// The reason a provider's own error code in the text names.
fn provider_code(text: &str) -> Option<Reason> {
    if let Some(r) = published_code(text) {
        return Some(r);
    }
    let b = text.as_bytes();
    let word_start = |i: usize| i == 0 || !b[i - 1].is_ascii_alphanumeric();
    for i in 0..b.len() {
        match b[i] {
            b'L' | b'l' | b'O' | b'o' if word_start(i) => {
                if let Some(code) = france_ptt_code(&b[i..]) {
                    let r = FRANCE_PTT.iter().find(|(c, _)| c.as_bytes() == code);
                    return Some(r.map_or(Reason::Undefined, |(_, r)| *r));
                }
            }
            b'I' if i > 0 && b[i - 1].is_ascii_whitespace() => {
                let ends = b.get(i + 5).is_none_or(|c| !c.is_ascii_alphanumeric());
                if ends
                    && let Some(code) = b.get(i..i + 5)
                    && let Some((_, r)) = GODADDY.iter().find(|(c, _)| c.as_bytes() == code)
                {
                    return Some(*r);
                }
            }
            _ => {}
        }
    }
    if text.contains("RESOLVER.")
        || text.contains("QUEUE.")
        || text.contains("SMTPSEND.")
        || text.contains("STOREDRV.")
    {
        return EXCHANGE
            .iter()
            .find(|(t, _)| text.contains(t))
            .map(|(_, r)| *r);
    }
    amavis_verdict(text)
}

/// amavisd-new's refusal names its verdict after the message's id, in the
/// reply templates it documents: `554 5.7.0 Reject, id=12345-01 - SPAM`,
/// `... - INFECTED: <virus>` (`- VIRUS:` in later versions). The 5.7.0
/// beside it says only "security", so the verdict decides.
fn amavis_verdict(text: &str) -> Option<Reason> {
    let at = text.find("id=")?;
    let head = text[..at].trim_end().as_bytes();
    let ends =
        |w: &[u8]| head.len() >= w.len() && head[head.len() - w.len()..].eq_ignore_ascii_case(w);
    if !ends(b"reject,") && !ends(b"discard,") {
        return None;
    }
    let rest = &text[at..];
    let verdict = rest.split_once(" - ")?.1.trim_start();
    let word: String = verdict
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    match word.as_str() {
        "SPAM" | "SPAMMY" => Some(Reason::Spamdetected),
        "INFECTED" | "VIRUS" => Some(Reason::Virusdetected),
        _ => None,
    }
}

/// The three digits that decide an Orange/La Poste code at the start of `b`.
fn france_ptt_code(b: &[u8]) -> Option<&[u8]> {
    let upper = |i: usize| b.get(i).map(u8::to_ascii_uppercase);
    let prefix = if upper(0)? == b'L' && upper(1)? == b'P' && upper(2)? == b'N' {
        if (3..6).all(|i| upper(i) == Some(b'A')) {
            6
        } else {
            3
        }
    } else if upper(0)? == b'O' && matches!((upper(1)?, upper(2)?), (b'F', b'R') | (b'U', b'K')) {
        3
    } else {
        return None;
    };
    let digits = |from: usize| {
        b.get(from..from + 3)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
    };
    let end_ok = |at: usize| {
        b.get(at)
            .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_')
    };
    // `_NNN`, or `NNN_NNN` / `NNN-NNN`.
    if b.get(prefix) == Some(&b'_') {
        return digits(prefix + 1).filter(|_| end_ok(prefix + 4));
    }
    digits(prefix)?;
    if matches!(b.get(prefix + 3), Some(b'_' | b'-')) {
        return digits(prefix + 4).filter(|_| end_ok(prefix + 7));
    }
    None
}

/// Whether a failure is a hard bounce (Sisimai's rule: only an unknown
/// user, an unknown host, a moved address, or a host that accepts no mail
/// permanently).
#[cfg(test)]
pub fn is_hard(reason: Reason, status: &str, reply_code: Option<u16>) -> bool {
    is_hard_why(reason, status, reply_code).0
}

/// [`is_hard`] and the rule that decided.
pub fn is_hard_why(reason: Reason, status: &str, reply_code: Option<u16>) -> (bool, &'static str) {
    match reason {
        Reason::Userunknown | Reason::Hostunknown | Reason::Hasmoved => {
            (true, "hard-reason-address-gone")
        }
        Reason::Notaccept => {
            let permanent = status.starts_with('5')
                || (status.is_empty() && reply_code.is_some_and(|c| c >= 500));
            (permanent, "notaccept-hard-when-permanent")
        }
        _ => (false, "soft-reason-may-pass-later"),
    }
}

/// The first `d.d.d` status in `text` whose class is 4 or 5, else the
/// first of class 2 (a transcript's "250 2.1.5 Ok" is not the failure).
pub fn find_status(text: &str) -> Option<String> {
    let first = find_status_from(text, 0)?;
    if !first.1.starts_with('2') {
        return Some(first.1);
    }
    let mut at = first.0 + 1;
    while let Some((i, s)) = find_status_from(text, at) {
        if !s.starts_with('2') {
            return Some(s);
        }
        at = i + 1;
    }
    Some(first.1)
}

/// The first `d.d.d` status at or after `from`, and where it starts.
fn find_status_from(text: &str, from: usize) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        let boundary_before =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.');
        if matches!(b, b'2' | b'4' | b'5') && boundary_before && bytes.get(i + 1) == Some(&b'.') {
            let mut j = i + 2;
            let d1 = digits(bytes, j, 3);
            if d1 > 0 && bytes.get(j + d1) == Some(&b'.') {
                j += d1 + 1;
                let d2 = digits(bytes, j, 3);
                let end = j + d2;
                let after_ok = bytes.get(end).is_none_or(|c| {
                    !(c.is_ascii_alphanumeric()
                        || (*c == b'.' && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)))
                });
                if d2 > 0 && after_ok {
                    return Some((i, text[i..end].to_owned()));
                }
            }
        }
        i += 1;
    }
    None
}

fn digits(bytes: &[u8], from: usize, max: usize) -> usize {
    let n = bytes[from.min(bytes.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if n <= max { n } else { 0 }
}

/// The first three-digit reply code 4xx or 5xx standing alone in `text`,
/// else the first 2xx (a greeting or "250 Ok" before the failure is not it).
pub fn find_reply_code(text: &str) -> Option<u16> {
    let (at, first) = find_reply_code_from(text, 0)?;
    if first >= 400 {
        return Some(first);
    }
    let mut from = at + 1;
    while let Some((i, c)) = find_reply_code_from(text, from) {
        if c >= 400 {
            return Some(c);
        }
        from = i + 1;
    }
    Some(first)
}

/// The first reply code at or after `from`, and where it starts.
fn find_reply_code_from(text: &str, from: usize) -> Option<(usize, u16)> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i + 3 <= bytes.len() {
        // Exchange's NDR writes the reply as `#550 5.1.1 RESOLVER...##`
        // (Microsoft's NDR reference): a '#' before a code with an enhanced
        // status after it; elsewhere '#' numbers things (`#5.1.1`, `#550x`).
        let exchange_hash = i > 0
            && bytes[i - 1] == b'#'
            && bytes.get(i + 3) == Some(&b' ')
            && bytes
                .get(i + 4)
                .is_some_and(|c| matches!(c, b'2' | b'4' | b'5'))
            && bytes.get(i + 5) == Some(&b'.');
        let boundary_before = i == 0
            || exchange_hash
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || matches!(bytes[i - 1], b'.' | b'-' | b':' | b'/' | b'#' | b'[' | b'_'));
        let w = &bytes[i..i + 3];
        if boundary_before
            && matches!(w[0], b'2' | b'4' | b'5')
            && w[1].is_ascii_digit()
            && w[2].is_ascii_digit()
            && w[1] <= b'5'
        {
            let next = bytes.get(i + 3);
            let after_ok = next.is_none_or(|c| {
                matches!(c, b' ' | b'-' | b'\n' | b'\t' | b')' | b':' | b'"' | b',')
            });
            if after_ok {
                let code = u16::from(w[0] - b'0') * 100
                    + u16::from(w[1] - b'0') * 10
                    + u16::from(w[2] - b'0');
                return Some((i, code));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_in_folded_text_earliest_first() {
        let folded = "550 user unknown (in reply to\n    RCPT TO command)";
        assert_eq!(find_command(folded), Some(Command::Rcpt));
        assert_eq!(find_command("After\u{a0}DATA"), Some(Command::Data));
        assert_eq!(
            find_command(">>> MAIL FROM:<a@b> ... after rcpt to"),
            Some(Command::Mail)
        );
        // Both start at the same place: the first listed wins.
        assert_eq!(find_command("in reply to end of data"), Some(Command::Data));
        assert_eq!(find_command("afterdata"), None);
        assert_eq!(find_command("in reply to"), None);
        assert_eq!(find_command(""), None);
    }

    fn r(status: &str, code: Option<u16>, diag: &str) -> Reason {
        reason(&Facts {
            status,
            reply_code: code,
            diagnostic: diag,
            action: "failed",
            command: Deferred::known(find_command(diag)),
            diagnostic_type: "smtp",
            specific: true,
        })
    }

    #[test]
    fn text_beats_a_generic_status() {
        assert_eq!(
            r("5.0.0", Some(550), "550 5.0.0 Mailbox full"),
            Reason::Mailboxfull
        );
        assert_eq!(
            r("5.7.1", Some(554), "554 5.7.1 Message rejected as spam"),
            Reason::Spamdetected
        );
        assert_eq!(
            r("5.1.1", Some(550), "550 5.1.1 User unknown"),
            Reason::Userunknown
        );
    }

    #[test]
    fn a_narrow_status_beats_the_text() {
        assert_eq!(
            r(
                "5.7.26",
                Some(550),
                "550 5.7.26 Unauthenticated email is not accepted, user unknown"
            ),
            Reason::Authfailure
        );
        assert_eq!(
            r("5.2.2", Some(552), "552 over the limit"),
            Reason::Mailboxfull
        );
    }

    #[test]
    fn status_alone_and_fallbacks() {
        assert_eq!(r("5.1.2", None, ""), Reason::Hostunknown);
        assert_eq!(r("4.4.7", None, ""), Reason::Expired);
        assert_eq!(r("", None, ""), Reason::Undefined);
        let f = Facts {
            action: "delayed",
            ..Facts::default()
        };
        assert_eq!(reason(&f), Reason::Expired);
    }

    #[test]
    fn registered_statuses_follow_the_iana_registry() {
        // RFC 6710 X.7.16: too big for its priority; X.7.28: a mail flood.
        assert_eq!(from_status("5.7.16"), Some(Reason::Mesgtoobig));
        assert_eq!(from_status("4.7.28"), Some(Reason::Speeding));
        // RFC 7293 X.7.17: the mailbox has had another owner.
        assert_eq!(from_status("5.7.17"), Some(Reason::Userunknown));
        // X.4.1 no answer from host: given up on (5) or expired (4).
        assert_eq!(from_status("5.4.1"), Some(Reason::Networkerror));
        assert_eq!(from_status("4.4.1"), Some(Reason::Expired));
        // RFC 4954 X.5.6: an authentication line too long.
        assert_eq!(from_status("5.5.6"), Some(Reason::Syntaxerror));
        // The generic X.7.1 is left to the text.
        assert_eq!(from_status("5.7.1"), None);
    }

    #[test]
    fn an_unknown_detail_reads_as_its_subject_when_nothing_else_is_said() {
        // RFC 3463: an unregistered detail means X.S.0; the generic 5.7.1
        // alone is a security or policy refusal, not "held for a human".
        assert_eq!(
            why("5.7.1", Some(550), "550 5.7.1 <kim@example.org>... zzz"),
            (Reason::Securityerror, "status-class-rfc3463")
        );
        assert_eq!(
            why("5.7.999", None, ""),
            (Reason::Securityerror, "status-class-rfc3463")
        );
        assert_eq!(
            why("5.4.987", None, ""),
            (Reason::Networkerror, "status-class-rfc3463")
        );
        // A vague temporary mail-system status stays on hold.
        assert_eq!(
            why("4.3.99", None, ""),
            (Reason::Onhold, "onhold-vague-temporary-status")
        );
        // The words still decide first.
        assert_eq!(
            r("5.7.1", Some(550), "550 5.7.1 Mailbox full"),
            Reason::Mailboxfull
        );
        // No class, no subject: nothing to read.
        assert_eq!(from_status_class("5.0.0"), None);
        assert_eq!(from_status_class("2.7.1"), None);
        assert_eq!(from_status_class("5.7.x"), None);
    }

    #[test]
    fn codes_553_at_rcpt_and_555_follow_rfc5321() {
        // RFC 5321: 553 to RCPT TO, a mailbox name not allowed (X.1.3).
        assert_eq!(
            why(
                "",
                Some(553),
                "553 sorry, zzz (in reply to RCPT TO command)"
            ),
            (Reason::Userunknown, "reply-code-rfc5321")
        );
        // RFC 5321 3.3: 550 to RCPT TO, the recipient is not deliverable.
        assert_eq!(
            why("", Some(550), "550 zzz (in reply to RCPT TO command)"),
            (Reason::Userunknown, "reply-code-rfc5321")
        );
        // 550 after DATA says nothing of the address.
        assert_ne!(
            why("", Some(550), "550 zzz (in reply to end of DATA command)").0,
            Reason::Userunknown
        );
        // 555: MAIL/RCPT parameters not recognized.
        assert_eq!(
            why("", Some(555), "555 zzz (in reply to RCPT TO command)"),
            (Reason::Syntaxerror, "reply-code-rfc5321")
        );
    }

    #[test]
    fn unknown_user_after_data_is_filtered() {
        assert_eq!(
            r(
                "5.0.0",
                Some(550),
                "host x said: 550 User unknown (in reply to end of DATA command)"
            ),
            Reason::Filtered
        );
    }

    #[test]
    fn unknown_user_at_an_unnamed_step_is_an_unknown_user() {
        assert_eq!(
            why("", Some(550), "550 <kim@example.org>: User unknown"),
            (Reason::Userunknown, "text-userunknown+step-unnamed")
        );
        // A filter's own words, or an X.2.x status, keep it filtered.
        assert_eq!(
            r(
                "",
                Some(550),
                "550 user unknown: refused due to recipient preferences"
            ),
            Reason::Filtered
        );
        assert_eq!(
            r("5.2.0", Some(550), "550 5.2.0 User unknown"),
            Reason::Filtered
        );
    }

    #[test]
    fn hard_only_for_permanent_address_failures() {
        assert!(is_hard(Reason::Userunknown, "5.1.1", Some(550)));
        assert!(!is_hard(Reason::Mailboxfull, "5.2.2", Some(552)));
        assert!(is_hard(Reason::Notaccept, "5.1.10", None));
        assert!(!is_hard(Reason::Notaccept, "4.0.0", None));
    }

    #[test]
    fn amavis_names_its_verdict_after_the_id() {
        // Dev row lhost-amavis-03; amavisd-new's documented templates.
        assert_eq!(
            r("5.7.0", Some(554), "554 5.7.0 Reject, id=20025-09 - SPAM"),
            Reason::Spamdetected
        );
        assert_eq!(
            r(
                "5.7.0",
                Some(554),
                "554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Test-Signature"
            ),
            Reason::Virusdetected
        );
        // Another verdict, or another server's "id=", decides nothing here.
        assert_eq!(
            amavis_verdict("554 5.7.0 Reject, id=12345-01 - BANNED: x.exe"),
            None
        );
        assert_eq!(amavis_verdict("550 rejected, see id=abc - spam"), None);
    }

    #[test]
    fn exchange_ndr_reply_codes_follow_a_hash() {
        assert_eq!(
            find_reply_code("#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##"),
            Some(550)
        );
        assert_eq!(find_reply_code("(#5.1.1)"), None);
        assert_eq!(find_reply_code("ticket #550 opened"), None);
    }

    #[test]
    fn documented_mta_wordings() {
        // Microsoft SMTP service: a routing loop (RFC 3463 X.4.6).
        assert_eq!(
            r(
                "",
                None,
                "Unable to deliver message to the following recipients, because the message was forwarded more than the maximum allowed times. This could indicate a mail loop."
            ),
            Reason::Networkerror
        );
        // Domino: a Person document without a mail file has no mailbox.
        assert_eq!(
            r(
                "",
                None,
                "Recipient's Domino Directory entry does not specify a valid Notes mail file"
            ),
            Reason::Userunknown
        );
    }

    #[test]
    fn documented_provider_wordings() {
        // Google's SMTP error reference.
        assert_eq!(
            r(
                "5.7.1",
                Some(550),
                "550-5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked."
            ),
            Reason::Spamdetected
        );
        assert_eq!(
            r(
                "5.7.1",
                Some(550),
                "550-5.7.1 The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead."
            ),
            Reason::Blocked
        );
        // Exchange Online's NDR reference.
        assert_eq!(
            r(
                "5.7.708",
                Some(550),
                "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP."
            ),
            Reason::Blocked
        );
        assert_eq!(
            r(
                "5.7.512",
                Some(550),
                "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant and include a valid From address"
            ),
            Reason::Notcompliantrfc
        );
        // X.1.1 with a missing mailbox's words beside a generic "access
        // denied" (IMail's and others' reply to RCPT TO) is the address.
        assert_eq!(
            r(
                "5.1.1",
                Some(550),
                "550 5.1.1 <nobody@example.org>... Mailbox unavailable or access denied"
            ),
            Reason::Userunknown
        );
        // Without the missing mailbox's words a refusal keeps its class.
        assert_eq!(
            r(
                "5.1.1",
                Some(550),
                "550 5.1.1 Sender address rejected: access denied"
            ),
            Reason::Rejected
        );
    }

    #[test]
    fn provider_codes_name_the_cause() {
        assert_eq!(
            r(
                "5.5.0",
                Some(550),
                "550 5.5.0 Le compte du destinataire est bloque. LPN007_426"
            ),
            Reason::Suspend
        );
        assert_eq!(
            r(
                "5.2.0",
                Some(550),
                "550 5.2.0 Mail rejete. Mail rejected. ofr_506 [506]"
            ),
            Reason::Spamdetected
        );
        // A code the table does not know leaves the cause open.
        assert_eq!(
            r("5.5.0", Some(550), "550 5.5.0 Service refuse. LPN001_108"),
            Reason::Undefined
        );
        assert_eq!(
            r(
                "5.1.1",
                Some(550),
                "550 5.1.1 <a@b> - 192.0.2.1 has sent to too many recipients this hour. IB607"
            ),
            Reason::Speeding
        );
        assert_eq!(
            r(
                "5.2.3",
                Some(550),
                "550 5.2.3 RESOLVER.RST.RecipSizeLimit; message too large"
            ),
            Reason::Mesgtoobig
        );
        // Look-alikes are not codes.
        assert_eq!(provider_code("see LPN007 or XOFR_506 or IB6070"), None);
        assert_eq!(
            provider_code("550 SC-001 (BAY0-MC1-F12) rejected"),
            Some(Reason::Blocked)
        );
        assert_eq!(
            provider_code("421 RP-002 too fast"),
            Some(Reason::Toomanyconn)
        );
        assert_eq!(
            provider_code("554 (DNS:NR) no rDNS"),
            Some(Reason::Requireptr)
        );
        assert_eq!(provider_code("550 IP blocked. CXBL"), Some(Reason::Blocked));
        assert_eq!(provider_code("DISC-0011 or XBL21 or BL210"), None);
    }

    #[test]
    fn said_but_unknown_is_on_hold_unless_only_the_general_text() {
        let mut f = Facts {
            diagnostic: "Did not reach the following recipient",
            action: "failed",
            specific: true,
            ..Facts::default()
        };
        assert_eq!(reason(&f), Reason::Onhold);
        f.specific = false;
        assert_eq!(reason(&f), Reason::Undefined);
    }

    fn why(status: &str, code: Option<u16>, diag: &str) -> (Reason, &'static str) {
        reason_why(&Facts {
            status,
            reply_code: code,
            diagnostic: diag,
            action: "failed",
            command: Deferred::known(find_command(diag)),
            diagnostic_type: "smtp",
            specific: true,
        })
    }

    #[test]
    fn each_decision_names_its_rule() {
        assert_eq!(
            why("5.2.2", Some(552), "552 5.2.2 over the limit"),
            (Reason::Mailboxfull, "status-narrow")
        );
        assert_eq!(
            why(
                "",
                Some(550),
                "550 no such user (in reply to RCPT TO command)"
            ),
            (Reason::Userunknown, "phase-rcpt+text-userunknown")
        );
        assert_eq!(
            why(
                "",
                Some(550),
                "550 no such user (in reply to end of DATA command)"
            ),
            (Reason::Filtered, "phase-after-data+text-userunknown")
        );
        assert_eq!(
            why("", None, "Did not reach the following recipient"),
            (Reason::Onhold, "onhold-no-rule-applies")
        );
    }

    #[test]
    fn a_success_status_is_delivered_not_a_failure() {
        assert_eq!(
            why("2.6.0", None, "250 2.6.0 message accepted for delivery"),
            (Reason::Delivered, "status-class-2-success")
        );
        // A failure reply contradicting a success status is not delivered.
        assert_ne!(why("2.0.0", Some(550), "550 no").0, Reason::Delivered);
    }

    #[test]
    fn reply_codes_with_one_meaning_decide_when_nothing_else_does() {
        assert_eq!(
            why("", Some(530), "530 please try again"),
            (Reason::Securityerror, "reply-code-rfc5321")
        );
        assert_eq!(why("", Some(556), "556 nope").0, Reason::Notaccept);
        assert_eq!(why("", Some(551), "551 try elsewhere").0, Reason::Hasmoved);
    }

    #[test]
    fn qmail_and_exim_name_the_phase_in_their_own_words() {
        let qmail = "192.0.2.1 does not like recipient. Remote host said: 550 unknown user";
        assert_eq!(find_command(qmail), Some(Command::Rcpt));
        assert_eq!(why("", Some(550), qmail).0, Reason::Userunknown);
        let exim =
            "SMTP error from remote mail server after pipelined RCPT TO:<a@b>: 550 no such user";
        assert_eq!(find_command(exim), Some(Command::Rcpt));
        assert_eq!(
            find_command("Connected to 192.0.2.1 but greeting failed."),
            Some(Command::Conn)
        );
    }

    #[test]
    fn refused_at_the_greeting_is_blocked_not_a_sender_rejection() {
        // "access denied" names the sender's refusal at MAIL FROM; at the
        // greeting the client host was refused.
        assert_eq!(
            r(
                "",
                Some(554),
                "554 access denied (in reply to MAIL FROM command)"
            ),
            Reason::Rejected
        );
        assert_ne!(
            r(
                "",
                Some(554),
                "554 access denied (in reply to EHLO command)"
            ),
            Reason::Rejected
        );
        assert_ne!(
            r("", Some(421), "421 access denied: too many connections"),
            Reason::Rejected
        );
    }

    #[test]
    fn the_smtp_phase_decides_when_the_words_do_not() {
        // Refused at MAIL FROM with nothing else said: the sender.
        assert_eq!(
            why("", Some(550), "550 go away (in reply to MAIL FROM command)"),
            (Reason::Rejected, "phase-mail-from")
        );
        // Commands quoted by their RFC 5321 names in capitals.
        assert_eq!(
            find_command_verb("RCPT TO:<a@b> 550 5.1.1 no"),
            Some(Command::Rcpt)
        );
        assert_eq!(
            find_command_verb("MAIL FROM:<s@x> 250 ok RCPT TO:<a@b> 250 ok DATA 554 rejected"),
            Some(Command::Data)
        );
        assert_eq!(find_command_verb("the data was rcpt"), None);
        // A report's own label for the step.
        assert_eq!(
            find_labelled_command("-------SMTP command\nDATA\n"),
            Some(Command::Data)
        );
        assert_eq!(
            find_labelled_command("Last command: RCPT TO:<a@b>"),
            Some(Command::Rcpt)
        );
        assert_eq!(find_labelled_command("command database"), None);
        assert_eq!(find_labelled_command("the command died"), None);
        assert_eq!(find_command_verb("DATABASE error"), None);
    }

    #[test]
    fn rfc_3463_and_exchange_details_that_name_one_cause() {
        assert_eq!(
            r("5.4.7", Some(550), "550 5.4.7 gone too long"),
            Reason::Expired
        );
        assert_eq!(r("5.4.300", None, ""), Reason::Expired);
        assert_eq!(
            r("5.7.612", Some(550), "550 5.7.612 Access denied"),
            Reason::Blocked
        );
        assert_eq!(r("5.7.57", Some(530), ""), Reason::Securityerror);
        assert_eq!(r("5.7.10", Some(523), ""), Reason::Securityerror);
        assert_eq!(r("5.7.29", Some(550), ""), Reason::Authfailure);
    }

    #[test]
    fn a_missing_mailbox_in_other_words_is_an_unknown_user() {
        assert_eq!(
            why(
                "",
                Some(550),
                "550 User <kim@example.org> was not found here"
            ),
            (Reason::Userunknown, "text-mailbox-word+missing-word")
        );
        // Said of the sender, it is not.
        assert_ne!(
            why("", Some(550), "550 sender address <s@x> was not found").0,
            Reason::Userunknown
        );
        // After DATA a content filter answered.
        assert_ne!(
            why(
                "",
                Some(550),
                "550 User <kim@example.org> was not found (in reply to end of DATA command)"
            )
            .0,
            Reason::Userunknown
        );
    }

    #[test]
    fn a_block_list_refusal_is_blocked_unless_it_names_the_sender() {
        assert_eq!(
            r(
                "",
                Some(554),
                "554 access denied: 192.0.2.1 listed in zen.spamhaus.org"
            ),
            Reason::Blocked
        );
        assert_eq!(
            r("", Some(554), "554 sender rejected: domain listed in dbl"),
            Reason::Rejected
        );
    }

    #[test]
    fn documented_provider_and_mta_wording() {
        let cases: &[(&str, Reason)] = &[
            ("Cannot send message for 5 days", Reason::Expired),
            (
                "all hosts for 'x.example' have been failing for a long time",
                Reason::Expired,
            ),
            (
                "Could not deliver the message in the time limit specified.",
                Reason::Expired,
            ),
            (
                "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
                Reason::Norelaying,
            ),
            (
                "454 4.7.0 Cannot authenticate due to temporary system problem",
                Reason::Securityerror,
            ),
            (
                "all relevant MX records point to non-existent hosts",
                Reason::Hostunknown,
            ),
            ("Diagnostic: unrecognized-OR-name", Reason::Userunknown),
            (
                "550 5.7.1 requires all senders to authenticate with either SPF or DKIM",
                Reason::Authfailure,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(r("", None, text), *want, "{text}");
        }
    }

    #[test]
    fn rfc_1870_3463_5321_6152_and_7505_meanings() {
        // RFC 1870: 552 to MAIL FROM is the declared SIZE refused.
        assert_eq!(
            r(
                "",
                Some(552),
                "552 too much (in reply to MAIL FROM command)"
            ),
            Reason::Mesgtoobig
        );
        // RFC 7505: the sender's domain has a null MX.
        assert_eq!(
            r("5.7.27", Some(550), "550 5.7.27 Sender address has null MX"),
            Reason::Rejected
        );
        // X.1.10: a null MX when the words say so, else a missing mailbox.
        assert_eq!(
            r(
                "5.1.10",
                Some(556),
                "556 5.1.10 Recipient address has null MX"
            ),
            Reason::Notaccept
        );
        assert_eq!(
            r(
                "5.1.10",
                Some(550),
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
            ),
            Reason::Userunknown
        );
        // A refused TCP connection is no answer from the host (X.4.1),
        // not a block list.
        assert_eq!(
            r(
                "4.4.1",
                None,
                "connect to mx.example.org[192.0.2.1]:25: Connection refused"
            ),
            Reason::Expired
        );
        // A domain that is not there beats the recipient words (X.1.2).
        assert_eq!(
            r(
                "4.1.2",
                Some(450),
                "450 4.1.2 <a@b.example>: Recipient address rejected: Domain not found"
            ),
            Reason::Hostunknown
        );
        assert_eq!(
            r("", None, "Host not found, try again"),
            Reason::Networkerror
        );
        let cases: &[(&str, Reason)] = &[
            ("a@b.example (host not found)", Reason::Hostunknown),
            ("This mailbox is disabled (554.30)", Reason::Suspend),
            (
                "554 5.6.0 Mail message is malformed. Not accepted.",
                Reason::Contenterror,
            ),
            (
                "550 The message size of 12345 bytes exceeds the limit of 10000",
                Reason::Mesgtoobig,
            ),
            (
                "454 4.7.0 TLS not available due to temporary reason",
                Reason::Securityerror,
            ),
            (
                "Deferred: Connection refused by mx.example.org",
                Reason::Expired,
            ),
            (
                "550 5.6.0 Line too long (see RFC 5321 4.5.3.1.6)",
                Reason::Contenterror,
            ),
            ("554 5.6.0 Message contains bare LF", Reason::Contenterror),
            ("554 5.6.1 8-bit data not accepted", Reason::Contenterror),
            (
                "552 5.3.4 Message size exceeds fixed maximum message size",
                Reason::Mesgtoobig,
            ),
            (
                "Delivery attempts will continue for 4 days",
                Reason::Expired,
            ),
            ("THIS IS A WARNING MESSAGE ONLY", Reason::Expired),
            (
                "550 unknown local-part \"kim\" in domain \"example.org\"",
                Reason::Userunknown,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(r("", None, text), *want, "{text}");
        }
    }

    #[test]
    fn documented_refusals_of_spam_spf_dns_and_disabled_mailboxes() {
        let cases: &[(&str, &str, Reason)] = &[
            // Microsoft's support article 3024906.
            (
                "5.7.1",
                "550 5.7.1 Message rejected due to content restrictions",
                Reason::Spamdetected,
            ),
            // SpamAssassin's report template beats the PTR test it lists.
            (
                "5.7.1",
                "554 5.7.1 has identified this incoming email as possible spam. \
                 Content analysis details: (9.1 points, 5.0 required) RDNS_NONE",
                Reason::Spamdetected,
            ),
            // The word spam when no list knew the sentence, not a block
            // list's name.
            ("5.7.1", "554 5.7.1 Rejected: SPAM", Reason::Spamdetected),
            (
                "5.0.0",
                "550 Message refused, looks like unsolicited bulk email",
                Reason::Spamdetected,
            ),
            (
                "5.7.1",
                "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.spamcop.net",
                Reason::Blocked,
            ),
            // The SPF explanation beats the IP words around it.
            (
                "5.7.1",
                "550 5.7.1 [SPF] 192.0.2.1 is not allowed to send mail from example.org. \
                 Please see http://www.open-spf.org/Why?s=mfrom;id=a@example.org",
                Reason::Authfailure,
            ),
            (
                "5.7.1",
                "550 5.7.1 Sender ID (PRA) Not Permitted",
                Reason::Authfailure,
            ),
            (
                "",
                "550 Mail from 192.0.2.1 refused using Trend Micro Email Reputation database",
                Reason::Blocked,
            ),
            // AOL's and AT&T's published codes and texts.
            (
                "5.7.1",
                "554 5.7.1 (RTR:BB) http://postmaster.example/554rtrbb.html",
                Reason::Blocked,
            ),
            (
                "5.7.1",
                "554 5.7.1 : (HVU:B1) http://postmaster.example/554hvub1.html",
                Reason::Spamdetected,
            ),
            (
                "",
                "550 [permfail] bellsouth.net requires valid sender domain",
                Reason::Rejected,
            ),
            // Sendmail's m4 configuration texts.
            (
                "5.7.1",
                "550 Mail from 192.0.2.1 refused by blackhole site bl.example.net",
                Reason::Blocked,
            ),
            (
                "4.3.2",
                "452 4.3.2 Too many open connections.",
                Reason::Toomanyconn,
            ),
            (
                "5.5.4",
                "553 Domain name required for sender address kim",
                Reason::Rejected,
            ),
            // RFC 1035's name error on a permanent failure; Gmail's
            // temporary one stays a lookup failed for now.
            (
                "5.0.0",
                "DNS Error: DNS type 'mx' lookup of example.invalid responded with code NXDOMAIN",
                Reason::Hostunknown,
            ),
            (
                "4.0.0",
                "DNS Error: DNS type 'mx' lookup of example.invalid responded with code NXDOMAIN",
                Reason::Networkerror,
            ),
            // X.2.1, mailbox disabled, with only the generic 550 text; with
            // words of an unknown user, that user.
            ("5.2.1", "550 5.2.1 Mailbox unavailable", Reason::Suspend),
            (
                "5.2.1",
                "550 5.2.1 <a@b.example>... User Unknown (in reply to RCPT TO command)",
                Reason::Userunknown,
            ),
            // X.411 names, Google's and Exchange's documented texts.
            (
                "5.0.0",
                "Diagnostic-code: content-syntax-error",
                Reason::Contenterror,
            ),
            ("5.0.0", "MAPI_DIAG_CONTENT_TOO_LONG", Reason::Mesgtoobig),
            (
                "5.4.6",
                "A configuration error in the e-mail system caused the message to \
                 bounce between two servers",
                Reason::Networkerror,
            ),
            (
                "5.7.26",
                "550 5.7.26 This mail has been blocked because the sender is unauthenticated",
                Reason::Authfailure,
            ),
        ];
        for (status, text, want) in cases {
            assert_eq!(r(status, None, text), *want, "{status} {text}");
        }
    }

    #[test]
    fn finds_statuses_and_codes() {
        assert_eq!(find_status("550 5.1.1 <a@b>: no").as_deref(), Some("5.1.1"));
        assert_eq!(
            find_status("ip 192.0.2.1 said 5.7.606 x").as_deref(),
            Some("5.7.606")
        );
        assert_eq!(find_status("version 1.5.2.3"), None);
        assert_eq!(find_reply_code("host said: 550-5.1.1 x"), Some(550));
        assert_eq!(find_reply_code("[192.0.2.250]: 421 busy"), Some(421));
        // A transcript's greeting or "250 Ok" is not the failure.
        let transcript = "Out: 220 hi Out: 250 2.1.5 Ok Out: 451 4.3.0 queue file write error";
        assert_eq!(find_reply_code(transcript), Some(451));
        assert_eq!(find_status(transcript).as_deref(), Some("4.3.0"));
        assert_eq!(find_reply_code("250 2.0.0 Ok"), Some(250));
        assert_eq!(pseudo_status(Reason::Userunknown, '5'), "5.0.911");
    }
}
