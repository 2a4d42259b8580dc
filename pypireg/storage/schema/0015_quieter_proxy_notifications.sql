-- A proxied name's first serve records its origin, and every fetch stores
-- its page: neither changes what an index lists (a proxied page's copies
-- live no longer than its ttl), yet each dropped every daemon's caches,
-- once a package during a cold install. What does matter still notifies:
-- local origins (uploads, reserve, claim), origins changed or deleted, and
-- pages forgotten (`pypireg upstream refresh`) or deleted (purge).
DROP TRIGGER name_origins_changed ON name_origins;
CREATE TRIGGER name_origins_changed AFTER UPDATE OR DELETE OR TRUNCATE
    ON name_origins FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER name_origins_local AFTER INSERT ON name_origins
    FOR EACH ROW WHEN (NEW.origin = 'local') EXECUTE FUNCTION pypireg_notify_change();

DROP TRIGGER upstream_pages_changed ON upstream_pages;
CREATE TRIGGER upstream_pages_changed AFTER DELETE OR TRUNCATE
    ON upstream_pages FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER upstream_pages_forgotten AFTER UPDATE ON upstream_pages
    FOR EACH ROW WHEN (NEW.checked_at = '-infinity' AND OLD.checked_at <> '-infinity')
    EXECUTE FUNCTION pypireg_notify_change();
