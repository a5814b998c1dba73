-- 0008 down: the columns go (the loads they described stay).
ALTER TABLE load_log DROP COLUMN pairs, DROP COLUMN origin;
