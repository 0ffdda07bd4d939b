-- A replay of an Idempotency-Key marks the key in a transaction that commits before its 200
-- names the callback; the compensation of a create whose own request was answered 503 locks
-- the key first and keeps a callback whose key is marked
-- (docs/bounded-answers.md#a-replay-of-a-create-answered-503).
-- A constant default adds the column without rewriting the table.
ALTER TABLE idempotency_keys ADD COLUMN replayed boolean NOT NULL DEFAULT false;
