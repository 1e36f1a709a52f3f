-- 0001 downgrade: everything reminderd created in this database (the cluster-wide roles stay).
DROP SCHEMA reminderd CASCADE;
