-- A withdrawal of a keyed create answered 503 marks its key `given_back_at` in a transaction
-- that commits before it gives the callback's throttle reservation back; the key goes with the
-- withdrawn callback when the withdrawal commits. While a mark is recent, the callback is being
-- withdrawn: the throttle re-seed does not count it. A replay of the key admits it again like
-- a create (checked) before it clears the mark and answers
-- (docs/bounded-answers.md#a-replay-of-a-create-answered-503). A mark left by a process that
-- died before its withdrawal committed ages out of the re-seed's view. Marks are rare and
-- short-lived; the partial index keeps the re-seed's check free when there is none.
ALTER TABLE idempotency_keys ADD COLUMN given_back_at timestamptz;
CREATE INDEX idempotency_keys_given_back_idx ON idempotency_keys (tenant_id, callback_id)
    WHERE given_back_at IS NOT NULL;
