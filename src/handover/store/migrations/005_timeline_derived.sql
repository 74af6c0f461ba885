-- A case's timeline is now derived from outbox, deliveries and received
-- (store/cases.py); the table that copied them is no longer written.
DROP TABLE timeline;
