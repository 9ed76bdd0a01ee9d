-- A relay's own CA file, sqlite dialect. Keep in step with ../postgres/0018_relay_tls_ca.sql.
--
-- The path of a PEM file of CA certificates that the relay's TLS (smtps:// or STARTTLS) is
-- checked against instead of the public roots; NULL = the public roots. Each host reads
-- the file at this path; the store never holds its contents.
ALTER TABLE relays ADD COLUMN tls_ca_file TEXT;
