-- Ciphertext and sealed bodies do not compress: store them out of line without
-- trying (PostgreSQL would otherwise spend CPU on a failed compression per row).
ALTER TABLE outbox ALTER COLUMN wire SET STORAGE EXTERNAL;
ALTER TABLE outbox ALTER COLUMN body_box SET STORAGE EXTERNAL;
ALTER TABLE received ALTER COLUMN wire SET STORAGE EXTERNAL;
ALTER TABLE received ALTER COLUMN body_box SET STORAGE EXTERNAL;
