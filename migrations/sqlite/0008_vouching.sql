-- How long a held request's query string is: it is in the digest, never
-- stored (it may carry anything). And: a factor registered while some
-- approver already has one waits for an
-- enrolled approver to vouch for it (one stolen admin key must not make an
-- approver, let alone two): a code factor confirmed with its first code
-- keeps that code's step here until then; a passkey has no voucher yet.
ALTER TABLE approver_pending_factors ADD COLUMN confirmed_step INTEGER;
ALTER TABLE approver_passkeys ADD COLUMN vouched_by TEXT;
UPDATE approver_passkeys SET vouched_by = 'enrolled before vouching';
ALTER TABLE approvals ADD COLUMN query_bytes INTEGER;
