-- Every committed change that can alter what the daemons serve sends a
-- NOTIFY naming the table, so each daemon (and only then) drops what it
-- cached from it, whoever wrote: another daemon, or the admin command.

CREATE OR REPLACE FUNCTION pypireg_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pypireg_change', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER package_files_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON package_files FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER packages_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON packages FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER package_versions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON package_versions FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER projects_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON projects FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER groups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON groups FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER members_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON members FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON users FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
-- Not on last_used_at, which changes all the time and decides nothing.
CREATE TRIGGER tokens_changed AFTER INSERT OR DELETE OR TRUNCATE
    ON tokens FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER tokens_updated
    AFTER UPDATE OF revoked_at, expires_at, scope, kind, user_id, username, project_id
    ON tokens FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
