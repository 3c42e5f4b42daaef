-- Moving an identity to another browser (#15, docs/credit.md): a one-time code, issued to a
-- worker's token and redeemed for it once. Neither the code nor the token is kept in the
-- clear: `code_hash` is the SHA-256 of the code in one domain ("brain transfer find:"), and
-- `sealed_token` the token XORed with a key stream derived from the code in another
-- ("brain transfer seal:"), in hex. One live code per worker; the row is deleted as it is
-- redeemed, and expired rows are swept (oldest first, by the index) when codes are issued.
CREATE TABLE transfer_codes (
    code_hash    TEXT    PRIMARY KEY,
    worker_id    TEXT    NOT NULL UNIQUE REFERENCES workers (id),
    sealed_token TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX transfer_codes_expiry ON transfer_codes (expires_at);
