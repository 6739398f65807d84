-- What a push updated: 'branch' (refs/heads/*), 'tag' (refs/tags/*) or 'other'; NULL when the
-- payload has no ref. New rows get it from the parser; `ghevents reparse` fills older ones
-- from their raw payloads. Nullable, no default: adding it rewrites nothing.
ALTER TABLE push_events ADD COLUMN IF NOT EXISTS ref_type TEXT;
